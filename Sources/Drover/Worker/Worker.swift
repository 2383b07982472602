import DroverPool
import DroverProtocol
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// A worker process's engine: one I/O thread that owns the broker socket (and the controller
/// subscription), and a ``HandlerPool`` whose threads run the handler.
///
/// Threads: ``run()`` is the I/O thread. Handler threads put outcomes in a mailbox and wake it
/// through an eventfd; ``drain(reason:)`` and ``stopNow()`` do the same from any thread.
public final class Worker: Sendable {
    public let options: WorkerOptions
    let handler: any WorkHandler
    let logger: Logger
    let context: ZMQContext
    let wakeup = Wakeup()
    let mailbox = Mutex(Mailbox())
    /// The broker's item limit, from its `welcome`: a result longer than this fails its item
    /// here, since the broker would refuse the message that carried it.
    let maxResultBytes = Atomic<Int>(Int.max)
    /// Raised when the worker gives up on its running items; every item it runs carries it.
    let cancellation = Cancellation()
    /// Outcomes a handler thread gathers before it wakes the I/O thread; follows the lookahead.
    let outcomeBatch = Atomic<Int>(1)
    /// Longest wait for a handler's processes to exit once the worker has drained.
    static let handlerShutdownMilliseconds: Int64 = 5000
    /// Most bytes of a handler's error text sent to the broker.
    static let maxErrorBytes = 16 * 1024

    /// What other threads leave for the I/O thread.
    struct Mailbox {
        var outcomes: [FinishedJob] = []
        var drainRequested: String? = nil
        var stopRequested = false
    }

    public init(options: WorkerOptions, handler: any WorkHandler, context: ZMQContext = ZMQContext(), logger: Logger) {
        self.options = options
        self.handler = handler
        self.context = context
        self.logger = logger
    }

    /// A worker whose handler is `body`, run on the handler threads.
    public convenience init(options: WorkerOptions, logger: Logger,
                            handler body: @escaping @Sendable (WorkItem) throws -> [UInt8]) {
        self.init(options: options, handler: ClosureHandler(body), logger: logger)
    }

    /// Starts draining: no more work, unstarted items handed back, running ones finished.
    /// What SIGTERM does. Safe from any thread.
    public func drain(reason: String) {
        mailbox.withLock { if $0.drainRequested == nil { $0.drainRequested = reason } }
        wakeup.signal()
    }

    /// Stops at once; the broker redelivers whatever this worker held. What a second SIGTERM does.
    public func stopNow() {
        mailbox.withLock { $0.stopRequested = true }
        wakeup.signal()
    }

    /// Serves until the fleet exits, the worker is drained, or ``stopNow()``; blocks the calling thread.
    public func run() throws -> WorkerExit {
        if let problem = Endpoint.problem(options.broker, binding: false) { throw DroverError.badOption("--broker: \(problem)") }
        if let control = options.control, let problem = Endpoint.problem(control, binding: false) {
            throw DroverError.badOption("--control: \(problem)")
        }
        if let problem = QueueName.problem(options.queue) { throw DroverError.badOption("--queue: \(problem)") }
        guard options.threads > 0, (options.lookahead ?? 0) >= 0 else { throw DroverError.badOption("--threads must be at least 1 and --lookahead at least 0") }

        let broker = try ZMQSocket(context, type: .dealer, linger: 1000)
        var routingID: [UInt8] = Array("w-".utf8)
        for _ in 0..<12 { routingID.append(UInt8.random(in: 0...255)) }
        try broker.set(.routingID(routingID))
        let monitor = try broker.monitor(.handshakes)
        try options.security.configure(broker)
        try broker.set(.immediate(true))
        try broker.set(.reconnectInterval(milliseconds: 100))
        try broker.set(.reconnectIntervalMax(milliseconds: 2000))
        try broker.set(.heartbeatInterval(milliseconds: options.heartbeatMilliseconds))
        try broker.set(.heartbeatTimeout(milliseconds: options.heartbeatMilliseconds * options.liveness))
        try broker.set(.maxMessageSize(bytes: 64 << 20))
        try broker.connect(options.broker)

        var control: ZMQSocket? = nil
        if let endpoint = options.control {
            let sub = try ZMQSocket(context, type: .sub, linger: 0)
            try sub.set(.subscribe([]))
            try options.controlSecurity.configure(sub)
            try sub.set(.reconnectIntervalMax(milliseconds: 2000))
            try sub.set(.maxMessageSize(bytes: 4096))
            try sub.connect(endpoint)
            control = sub
        }

        let pool = makePool()

        var loop = WorkerLoop(worker: self, broker: broker, control: control, monitor: monitor, pool: pool)
        let exit = try loop.run()
        broker.stopMonitor()
        monitor.close()
        broker.close()
        control?.close()
        switch exit {
        case .drained:
            pool.join()
            // The drain itself may have used its deadline: the handler's own goodbye gets at most
            // a few seconds more.
            handler.shutdown(deadlineMilliseconds: min(Int64(options.drainDeadlineMilliseconds), Self.handlerShutdownMilliseconds))
        case .deadlinePassed, .stopped: pool.close()  // handler threads may be stuck; the process ends them
        }
        return exit
    }

    /// The handler threads: one item at a time, or batches for a handler that keeps several in
    /// flight (``WorkHandler/batchLimit``).
    private func makePool() -> HandlerPool<HeldJob> {
        let batch = handler.batchLimit
        let capacity = LookaheadSizer(threads: options.threads, fixed: options.lookahead).maxCapacity
        guard batch > 1 else {
            return HandlerPool(threads: options.threads, capacity: capacity, name: "drover-handler") { [self] job, pool in
                let item = workItem(job.delivery)
                let started = monotonicMicroseconds()
                finished(job, Self.run(handler, item), since: started, pool: pool)
            }
        }
        return HandlerPool(threads: options.threads, capacity: capacity, name: "drover-handler", batch: batch) {
            [self] jobs, ended, pool in
            let items = jobs.map { workItem($0.delivery) }
            // With several in flight, an item's time is the gap since the previous answer.
            var previous = monotonicMicroseconds()
            handler.handle(batch: items) { index, result in
                previous = finished(jobs[index], Self.outcome(items[index], result), since: previous, pool: pool)
                ended(1)
            }
        }
    }

    /// A delivery as the handler sees it, its deadline counting from now.
    private func workItem(_ delivery: Delivery) -> WorkItem {
        var item = WorkItem(id: delivery.id, attempt: delivery.attempt, queue: options.queue, payload: delivery.payload,
                            worker: options.name, maxResultBytes: maxResultBytes.load(ordering: .relaxed))
        item.limit(worker: options.itemTimeoutMilliseconds, producer: delivery.timeoutMilliseconds)
        item.cancellation = cancellation
        return item
    }

    /// Leaves a finished job's outcome for the I/O thread, with the time since `started`
    /// (monotonic µs); returns the time now.
    @discardableResult
    private func finished(_ job: HeldJob, _ outcome: ItemOutcome, since started: Int64, pool: HandlerPool<HeldJob>) -> Int64 {
        let now = monotonicMicroseconds()
        let batch = outcomeBatch.load(ordering: .relaxed)
        let waiting = mailbox.withLock { box in
            box.outcomes.append(FinishedJob(slot: job.slot, outcome: outcome, microseconds: UInt32(clamping: now - started)))
            return box.outcomes.count
        }
        // Wake the I/O thread when the outcomes make a batch, or when no job is queued (the
        // last of a burst, or a lone item: it goes at once). Otherwise the next job's end
        // will; the I/O thread also looks every `WorkerLoop.outcomeWaitMilliseconds`.
        if waiting == batch || (waiting < batch && pool.queued == 0) { wakeup.signal() }
        return now
    }

    /// Runs `item` through `handler`: its outcome (see ``outcome(_:_:)``).
    static func run(_ handler: any WorkHandler, _ item: WorkItem) -> ItemOutcome {
        outcome(item, Result { try handler.handle(item) })
    }

    /// What the handler returned or threw for `item`, as an outcome for the broker. A result
    /// over the item's `maxResultBytes` fails the item instead (it is retried and dead-lettered
    /// like any failure), and error text is cut to ``maxErrorBytes``, so that no outcome is
    /// larger than the broker accepts.
    static func outcome(_ item: WorkItem, _ result: Result<[UInt8], any Error>) -> ItemOutcome {
        let limit = item.maxResultBytes
        let text: String
        switch result {
        case .success(let result):
            if result.count <= limit { return ItemOutcome(id: item.id, attempt: item.attempt, status: .succeeded, payload: result) }
            text = "result of \(groupedDigits(result.count)) bytes is over the broker's limit of \(groupedDigits(limit)) (broker --max-item-size)"
        case .failure(let error):
            text = "\(error)"
        }
        var error = utf8Prefix(text.utf8, maxBytes: min(maxErrorBytes, limit))
        if text.utf8.count > error.count { error += Array(" …".utf8) }
        return ItemOutcome(id: item.id, attempt: item.attempt, status: .failed, payload: error)
    }
}
