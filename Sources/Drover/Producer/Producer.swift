import DroverProtocol
import Logging
import ZeroMQ

/// Sends items to the broker and collects acceptances and, on request, outcomes.
///
/// Not `Sendable`: it owns a socket, so it stays on the thread that made it. For the same
/// reason its stored properties skip Swift's run-time exclusivity checks: one thread, and no
/// call that reaches user code (`onOutcome`) while a property is being changed. The checks took
/// a sixth of the producer's time.
public final class Producer {
    public let options: ProducerOptions
    private let socket: ZMQSocket
    /// Reports the broker connection's losses: what was queued on a lost connection, both ways,
    /// is gone (outcomes included), and after a reconnection the broker sees a new peer, so
    /// everything unfinished must be offered again. A pause of this process (SIGSTOP, a laptop
    /// lid) past the broker's heartbeat timeout ends in exactly that, and the outcomes already
    /// waiting here can make it look as if the broker never went silent.
    private let monitor: ZMQSocket
    private let logger: Logger
    @exclusivity(unchecked) private var welcome: Welcome?
    /// Distinguishes this run's item ids from every other producer's.
    private let runID = UInt64.random(in: 1...UInt64.max)
    @exclusivity(unchecked) private var lastHeard: Int64 = 0
    @exclusivity(unchecked) private var lastSent: Int64 = 0
    @exclusivity(unchecked) private var poller: ZMQPoller? = nil
    @exclusivity(unchecked) private var malformed = MalformedMessages()

    // The current run's books (see ``begin(onOutcome:)``).
    @exclusivity(unchecked) private var onOutcome: (Int, ItemOutcome) -> Void = { _, _ in }
    @exclusivity(unchecked) private var summary = ProducerSummary()
    /// Unfinished items by index: until accepted, or with `--wait` until their outcome.
    @exclusivity(unchecked) private var outstanding: UnfinishedItems
    /// Unfinished items to offer again at `retryAt`.
    @exclusivity(unchecked) private var retry: [UInt64] = []
    @exclusivity(unchecked) private var retryAt: Int64 = 0
    @exclusivity(unchecked) private var batch: [SubmittedItem] = []
    @exclusivity(unchecked) private var batchBytes = 0
    @exclusivity(unchecked) private var nextIndex: UInt64 = 0
    /// When the broker went silent, while it is.
    @exclusivity(unchecked) private var lostSince: Int64? = nil

    /// Sends a `hello` at most this often while waiting for the broker's first answer.
    static let helloRetryMilliseconds: Int64 = 250
    /// How long a queue-full rejection waits before the items are offered again.
    static let retryAfterFullMilliseconds: Int64 = 100

    public init(options: ProducerOptions, context: ZMQContext, logger: Logger) throws {
        if let problem = Endpoint.problem(options.broker, binding: false) { throw DroverError.badOption("--broker: \(problem)") }
        if let problem = QueueName.problem(options.queue) { throw DroverError.badOption("--queue: \(problem)") }
        self.options = options
        self.logger = logger
        outstanding = UnfinishedItems(window: options.window)
        socket = try ZMQSocket(context, type: .dealer, linger: 1000)
        monitor = try socket.monitor(.disconnected)
        try socket.set(.immediate(true))
        try socket.set(.reconnectIntervalMax(milliseconds: 1000))
        try socket.set(.maxMessageSize(bytes: 64 << 20))
        try socket.connect(options.broker)
    }

    /// Waits for the broker's `welcome`, or throws ``DroverError/anyUnreachable`` after the timeout.
    @discardableResult
    public func connect() throws -> Welcome {
        if let welcome { return welcome }
        let start = monotonicMilliseconds()
        let limit = start + Int64(options.connectTimeoutSeconds * 1000)
        var lastHello: Int64 = -Self.helloRetryMilliseconds
        var poller = ZMQPoller()
        _ = poller.add(socket)
        while monotonicMilliseconds() < limit {
            let now = monotonicMilliseconds()
            if now - lastHello >= Self.helloRetryMilliseconds {
                lastHello = now
                _ = try socket.send(Codec.encode(.hello(Hello(role: .producer, name: defaultWorkerName()))), dontWait: true)
            }
            if try poller.poll(timeout: 50)[0], let frames = try socket.receive(dontWait: true) {
                switch malformed.decode(frames, from: "the broker", logger: logger) {
                case .welcome(let w)?:
                    welcome = w
                    lastHeard = monotonicMilliseconds()
                    return w
                case .error(_, let text)?:
                    throw DroverError.refused("the broker at \(options.broker) refused this producer: \(text)")
                default:
                    continue
                }
            }
        }
        throw DroverError.unreachable("broker", options.broker, seconds: options.connectTimeoutSeconds,
                                      hint: "is `drover broker` running there and is the port open?")
    }

    /// Sends every item of `items` (read lazily, so stdin can stream), then waits for the
    /// broker to accept them all and, with ``ProducerOptions/waitForResults``, for their outcomes.
    ///
    /// If the broker goes silent the producer reconnects and offers every unfinished item
    /// again; the broker drops duplicates of items it still holds or completed recently, so a
    /// restarted broker gets back what it lost and a reconnection to the same broker costs
    /// nothing. `onOutcome` gets the item's index (0-based, in input order) and its outcome.
    @inlinable
    public func send<S: Sequence>(
        _ items: S,
        onOutcome: @escaping (Int, ItemOutcome) -> Void = { _, _ in },
        onProgress: ((ProducerProgress) -> Void)? = nil
    ) throws -> ProducerSummary where S.Element == [UInt8] {
        var iterator = items.makeIterator()
        return try run(next: { iterator.next().map(NextItem.item) ?? .end }, wakeOn: nil, onOutcome: onOutcome, onProgress: onProgress)
    }

    /// Sends every item `source` gives, as ``send(_:onOutcome:onProgress:)`` does, flushing the
    /// current batch whenever the source has nothing ready.
    @inlinable
    public func send<Source: ItemSource>(
        from source: inout Source,
        onOutcome: @escaping (Int, ItemOutcome) -> Void = { _, _ in },
        onProgress: ((ProducerProgress) -> Void)? = nil
    ) throws -> ProducerSummary {
        try withUnsafeMutablePointer(to: &source) { source in
            try run(next: { source.pointee.next() }, wakeOn: source.pointee.fileDescriptor, onOutcome: onOutcome, onProgress: onProgress)
        }
    }

    /// The loop behind both `send`s. Not generic, so that it is compiled once here; the
    /// callers' inlined closures give it items without generic dispatch per item.
    @usableFromInline
    func run(
        next: () -> NextItem,
        wakeOn fd: Int32?,
        onOutcome: @escaping (Int, ItemOutcome) -> Void,
        onProgress: ((ProducerProgress) -> Void)?
    ) throws -> ProducerSummary {
        try begin(onOutcome: onOutcome, alsoWakeOn: fd)
        var exhausted = false
        var lastProgress: Int64 = 0
        while true {
            fill: while !exhausted && canOffer {
                switch next() {
                case .item(let payload): try offer(payload)
                case .refused(let reason): refuse(reason)
                case .notYet: break fill
                case .end:
                    exhausted = true
                    // An input at its end polls readable (or invalid, once closed) forever.
                    if fd != nil { stopWakingOnInput() }
                }
            }
            try flush()
            if exhausted && unfinished == 0 { break }
            try pump(timeoutMilliseconds: 100)
            let now = monotonicMilliseconds()
            if let onProgress, now - lastProgress >= 100 {
                lastProgress = now
                onProgress(ProducerProgress(read: Int(nextIndex), accepted: summary.accepted, finished: summary.succeeded + summary.failed))
            }
        }
        return summary
    }

    // MARK: The engine: offer, flush, pump

    /// Starts a run: connects if needed and clears the books. `onOutcome` is called from
    /// ``pump(timeoutMilliseconds:)`` with each item's index and outcome; `pump` also returns
    /// early when `alsoWakeOn` (an input descriptor) becomes readable.
    public func begin(onOutcome: @escaping (Int, ItemOutcome) -> Void = { _, _ in }, alsoWakeOn fd: Int32? = nil) throws {
        welcome = try connect()
        self.onOutcome = onOutcome
        summary = ProducerSummary()
        outstanding.removeAll()
        retry.removeAll()
        batch.removeAll()
        batchBytes = 0
        nextIndex = 0
        lostSince = nil
        makePoller(alsoWakeOn: fd)
    }

    /// Polls the broker socket (index 0), the connection monitor (1) and `fd` when given (2).
    private func makePoller(alsoWakeOn fd: Int32?) {
        var p = ZMQPoller()
        _ = p.add(socket)
        _ = p.add(monitor)
        if let fd { _ = p.add(fileDescriptor: fd) }
        poller = consume p
    }

    /// Whether the window has room for another item.
    public var canOffer: Bool { outstanding.count < options.window }

    /// Items not yet safe: not accepted, or with ``ProducerOptions/waitForResults`` not yet finished.
    public var unfinished: Int { outstanding.count }

    /// Adds an item to the current batch, sending the batch when it is full; returns the item's
    /// index. Call ``flush()`` to send a partial batch now (a lone item should not wait).
    @discardableResult
    public func offer(_ payload: [UInt8]) throws -> Int {
        let index = nextIndex
        nextIndex += 1
        summary.read = Int(nextIndex)
        if payload.count > Int(welcome!.maxItemBytes) {
            summary.rejected[Int(index)] = "item is \(payload.count) bytes; the broker accepts at most \(welcome!.maxItemBytes) (broker --max-item-size)"
            return Int(index)
        }
        summary.sent += 1
        outstanding.add(index, payload: payload)
        if lostSince != nil {
            retry.append(index)  // goes out when the broker is back
            return Int(index)
        }
        batch.append(SubmittedItem(id: itemID(index), payload: payload))
        batchBytes += payload.count
        if batch.count >= options.batchItems || batchBytes >= options.batchBytes { try flush() }
        return Int(index)
    }

    /// Counts an item the input could not give (a line over the broker's limit) as read and
    /// refused with `reason`; returns its index.
    @discardableResult
    public func refuse(_ reason: String) -> Int {
        let index = Int(nextIndex)
        nextIndex += 1
        summary.read = Int(nextIndex)
        summary.rejected[index] = reason
        return index
    }

    /// From now on ``pump(timeoutMilliseconds:)`` waits for the broker alone.
    func stopWakingOnInput() { makePoller(alsoWakeOn: nil) }

    /// Sends the current batch. One that cannot be queued (the broker is not connected, or
    /// its pipe is full) is offered again shortly.
    public func flush() throws {
        guard !batch.isEmpty else { return }
        let message = DroverMessage.submit(Submit(queue: options.queue, wantsResults: options.waitForResults, items: batch))
        if try socket.send(Codec.encode(message), dontWait: true) {
            lastSent = monotonicMilliseconds()
        } else {
            retry += batch.map(\.id.low)
            retryAt = monotonicMilliseconds() + Self.retryAfterFullMilliseconds
        }
        batch.removeAll(keepingCapacity: true)
        batchBytes = 0
    }

    /// Waits up to `timeoutMilliseconds` for the broker, handles everything it sent (calling
    /// `onOutcome`), offers due retries again, keeps the connection alive, and notices a
    /// broker that went away. Throws once the broker has been gone for the reconnect timeout.
    public func pump(timeoutMilliseconds: Int) throws {
        let now = monotonicMilliseconds()
        if lostSince == nil && !retry.isEmpty && now >= retryAt {
            let again = retry
            retry.removeAll()
            for index in again {
                guard let item = outstanding[index], !item.accepted else { continue }
                batch.append(SubmittedItem(id: itemID(index), payload: item.payload))
                batchBytes += item.payload.count
                if batch.count >= options.batchItems || batchBytes >= options.batchBytes { try flush() }
            }
            try flush()
        }
        let ready = try poller!.poll(timeout: timeoutMilliseconds)
        if ready[0] {
            while let frames = try socket.receive(dontWait: true) {
                lastHeard = monotonicMilliseconds()
                if let message = malformed.decode(frames, from: "the broker", logger: logger) { try handle(message) }
            }
        }
        var after = monotonicMilliseconds()
        if ready[1] {
            while let event = try monitor.receiveMonitorEvent(dontWait: true) {
                guard event.kind == .disconnected, lostSince == nil else { continue }
                // Offered again when the broker's `welcome` arrives on the new connection.
                lostSince = after
                lastSent = 0  // say hello at once
                logger.warning("lost the connection to the broker; reconnecting", metadata: ["broker": "\(options.broker)"])
            }
        }
        // `hello` is the keep-alive: its `welcome` also says whether the broker restarted.
        after = monotonicMilliseconds()
        if after - lastSent >= Int64(welcome!.heartbeatMilliseconds),
           try socket.send(Codec.encode(.hello(Hello(role: .producer, name: defaultWorkerName()))), dontWait: true) {
            lastSent = after
        }
        if after - lastHeard > Int64(welcome!.heartbeatMilliseconds) * 3 {
            if lostSince == nil {
                lostSince = after
                logger.warning("lost contact with the broker; reconnecting", metadata: ["broker": "\(options.broker)"])
            } else if Double(after - lostSince!) > options.reconnectTimeoutSeconds * 1000 {
                throw DroverError.lostContact("broker", options.broker,
                    "no answer for \(formatSeconds(options.reconnectTimeoutSeconds)) with \(outstanding.count) items unfinished")
            }
        }
    }

    private func handle(_ message: DroverMessage) throws {
        switch message {
        case .welcome(let again):
            // The keep-alive's answer. After silence, or from a new broker process, everything
            // unfinished is offered again.
            if lostSince != nil || again.instance != welcome!.instance {
                logger.warning(again.instance != welcome!.instance
                               ? "the broker restarted; offering every unfinished item again"
                               : "the broker is back; offering every unfinished item again",
                               metadata: ["items": "\(outstanding.count)"])
                summary.accepted -= outstanding.acceptedCount  // counted again when re-accepted
                retry = outstanding.resetAcceptance()
                retryAt = 0
                lostSince = nil
            }
            welcome = again
        case .accepted(let ids):
            for itemID in ids where itemID.high == runID {
                if options.waitForResults {
                    guard outstanding.markAccepted(itemID.low) else { continue }
                    summary.accepted += 1
                } else if outstanding.remove(itemID.low) != nil {
                    summary.accepted += 1
                }
            }
        case .rejected(let rejection):
            for itemID in rejection.ids where itemID.high == runID {
                guard let item = outstanding[itemID.low], !item.accepted else { continue }
                if rejection.code == .queueFull {
                    retry.append(itemID.low)  // stays in the window until accepted
                    retryAt = monotonicMilliseconds() + Self.retryAfterFullMilliseconds
                } else {
                    outstanding.remove(itemID.low)
                    summary.rejected[Int(itemID.low)] = rejection.reason
                }
            }
        case .result(let outcomes):
            for outcome in outcomes where outcome.id.high == runID {
                guard let item = outstanding.remove(outcome.id.low) else { continue }
                if !item.accepted { summary.accepted += 1 }
                if outcome.status == .succeeded { summary.succeeded += 1 } else { summary.failed += 1 }
                onOutcome(Int(outcome.id.low), outcome)
            }
        case .error(let code, let text):
            throw DroverError.refused("the broker refused a message (\(code)): \(text)")
        default:
            break
        }
    }

    private func itemID(_ index: UInt64) -> ItemID { ItemID(high: runID, low: index) }

    /// Closes the connection (also done when the producer is released).
    public func close() {
        monitor.close()
        socket.close()
    }
}
