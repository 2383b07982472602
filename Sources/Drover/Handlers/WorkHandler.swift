import DroverProtocol
import Foundation
import Synchronization

/// An item as a handler sees it.
public struct WorkItem: Sendable {
    public var id: ItemID
    /// 1 on the first delivery, higher when the item is redelivered.
    public var attempt: UInt32
    public var queue: String
    /// The item's bytes: a slice of the message it arrived in, so no copy is made per item.
    /// `Array(item.payload)` when an array is needed.
    public var payload: ArraySlice<UInt8>
    /// The name of the worker running it.
    public var worker: String
    /// The largest result the broker accepts (its `--max-item-size`). A longer result fails the
    /// item; a handler that streams output (``ExecHandler``) may stop reading past it.
    public var maxResultBytes: Int
    /// When the item must be done by (``monotonicMilliseconds()``), or `nil` for no limit (the
    /// smaller of `drover worker --item-timeout` and the producer's `send --item-timeout`).
    /// Process handlers are killed past it; a closure should check ``isCancelled`` and give up,
    /// since nothing can stop a thread from outside.
    public var deadline: Int64?
    /// Set by the worker when it gives up on its running items (the drain deadline passed, or
    /// a second SIGTERM).
    var cancellation = Cancellation.never

    /// Whether the handler should stop working on this item now: its deadline has passed, or
    /// the worker has given up on running items. A closure that runs long should check it
    /// between steps and throw (``HandlerFailure``); one that never does keeps its thread, and
    /// its outcome, when it comes, is ignored by the broker if the item was handed back meanwhile.
    public var isCancelled: Bool {
        cancellation.isCancelled || deadline.map { monotonicMilliseconds() >= $0 } == true
    }

    public init(id: ItemID, attempt: UInt32, queue: String, payload: ArraySlice<UInt8>, worker: String,
                maxResultBytes: Int = Int.max, deadline: Int64? = nil) {
        self.id = id
        self.attempt = attempt
        self.queue = queue
        self.payload = payload
        self.worker = worker
        self.maxResultBytes = maxResultBytes
        self.deadline = deadline
    }

    /// Milliseconds until ``deadline``, for `poll`: -1 (wait for ever) without one, 0 once past.
    var pollTimeout: Int32 { pollMilliseconds(until: deadline) }

    /// The failure text for an item that ran past its deadline.
    var timedOutText: String {
        "timed out after \(formatSeconds(Double(timeoutMilliseconds ?? 0) / 1000)) (\(timeoutSetBy))"
    }

    /// The item's whole allowance when it has a deadline, for messages ("timed out after 0.5 s").
    public var timeoutMilliseconds: Int64? = nil
    /// Which limit ``timeoutMilliseconds`` is, for messages.
    var timeoutSetBy = "worker --item-timeout"

    /// Gives the item `worker` ms (the worker's limit) or `producer` ms (the producer's; 0 for
    /// none), whichever is smaller, counting from now.
    mutating func limit(worker: UInt32?, producer: UInt32) {
        let worker = worker.map(Int64.init), producer = producer > 0 ? Int64(producer) : nil
        if let producer, producer < worker ?? .max {
            timeoutMilliseconds = producer
            timeoutSetBy = "send --item-timeout"
        } else {
            timeoutMilliseconds = worker
            timeoutSetBy = "worker --item-timeout"
        }
        deadline = timeoutMilliseconds.map { monotonicMilliseconds() + $0 }
    }
}

/// A flag the worker raises once, when it stops waiting for running items.
final class Cancellation: Sendable {
    private let raised = Atomic<Bool>(false)
    /// One that is never raised, for items made outside a worker.
    static let never = Cancellation()

    var isCancelled: Bool { raised.load(ordering: .acquiring) }
    func cancel() { raised.store(true, ordering: .releasing) }
}

/// The error a handler throws to fail an item with a message of its own; any other error fails
/// the item with its description.
public struct HandlerFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

/// Runs items on a worker's handler threads. Called concurrently from several threads.
public protocol WorkHandler: Sendable {
    /// Processes one item and returns its result, or throws to fail it.
    func handle(_ item: WorkItem) throws -> [UInt8]
    /// Stops items that are still running, when the drain deadline has passed. Optional.
    func cancelRunning()
    /// The worker is done with the handler (it drained): release what it holds, within
    /// `deadlineMilliseconds`. Optional.
    func shutdown(deadlineMilliseconds: Int64)
    /// How many items a handler thread may pass to ``handle(batch:report:)`` at once: more than
    /// one for a handler that keeps several in flight (a process fed through a pipe). Default 1.
    var batchLimit: Int { get }
    /// Runs `items` in order and calls `report` with each one's index and outcome as soon as it
    /// is known, exactly once per item. The default runs ``handle(_:)`` on each in turn.
    func handle(batch items: [WorkItem], report: (Int, Result<[UInt8], any Error>) -> Void)
    /// How the handler's processes fare, for `drover status`. Default: nothing to report.
    var health: HandlerHealth { get }
}

extension WorkHandler {
    public func cancelRunning() {}
    public func shutdown(deadlineMilliseconds: Int64) {}
    public var batchLimit: Int { 1 }
    public var health: HandlerHealth { HandlerHealth() }
    public func handle(batch items: [WorkItem], report: (Int, Result<[UInt8], any Error>) -> Void) {
        for (index, item) in items.enumerated() {
            report(index, Result { try handle(item) })
        }
    }
}
