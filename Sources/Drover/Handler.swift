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
}

extension WorkHandler {
    public func cancelRunning() {}
}

/// A handler made from a closure: the Swift API for in-thread handlers.
public struct ClosureHandler: WorkHandler {
    private let body: @Sendable (WorkItem) throws -> [UInt8]

    public init(_ body: @escaping @Sendable (WorkItem) throws -> [UInt8]) {
        self.body = body
    }

    public func handle(_ item: WorkItem) throws -> [UInt8] { try body(item) }
}

/// `--echo`: the result is the item, and the item is printed on stdout, one line per item.
public final class EchoHandler: WorkHandler {
    private let print: Bool
    private let output = Mutex(())

    public init(print: Bool = true) {
        self.print = print
    }

    public func handle(_ item: WorkItem) throws -> [UInt8] {
        let result = Array(item.payload)
        if print {
            var line = result
            if line.last != UInt8(ascii: "\n") { line.append(UInt8(ascii: "\n")) }
            // One line per write, under a lock, so lines from several threads never interleave.
            output.withLock { _ in writeAll(STDOUT_FILENO, line) }
        }
        return result
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n > 0 { offset += n } else if errno != EINTR { return }
        }
    }
}
