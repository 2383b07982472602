import DroverProtocol
import Logging
import ZeroMQ

/// Sends items to the broker and collects acceptances and, on request, outcomes.
///
/// The logic lives in a ``ProducerSession`` (pure: items, messages and the time in; messages
/// and outcomes out); this class owns the socket, waits for the broker's first answer, and
/// polls. Not `Sendable`: it owns a socket, so it stays on the thread that made it. For the
/// same reason its stored properties skip Swift's run-time exclusivity checks: one thread, and
/// no call that reaches user code while a property is being changed (`onOutcome` is called
/// after the session has taken a message, not during). The checks took a sixth of the
/// producer's time.
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
    /// Distinguishes this producer's item ids from every other producer's.
    /// The high half of every item id of the current run: new each run, so that a second run's
    /// items are never taken for the first run's (the broker would answer them from its
    /// memory of completed ids without running them).
    private var runID = UInt64.random(in: 1...UInt64.max)
    @exclusivity(unchecked) private var welcome: Welcome?
    /// How the handshakes with the broker went (a refused key, a wrong --broker-key).
    @exclusivity(unchecked) private var handshakes: HandshakeWatch
    @exclusivity(unchecked) private var malformed = MalformedMessages()
    /// The current run, from ``begin(onOutcome:alsoWakeOn:)``; before the first, an empty
    /// session that ``started`` keeps unused. Not an optional: reading a property through an
    /// optional stored here copied the whole session (a retain of every buffer) on every item.
    @exclusivity(unchecked) private var session: ProducerSession<ProducerIO>
    /// Whether ``begin(onOutcome:alsoWakeOn:)`` has made `session` a real run.
    @exclusivity(unchecked) private var started = false
    /// Polls the broker socket (index 0) and the connection monitor (1).
    @exclusivity(unchecked) private var poller = ZMQPoller()
    /// Polls the broker socket alone, for the first handshake (a monitor event waiting there
    /// would wake every poll at once).
    @exclusivity(unchecked) private var socketPoller = ZMQPoller()
    /// Called with each item's index and outcome, from ``pump(timeoutMilliseconds:watchingInput:)``.
    @exclusivity(unchecked) private var onOutcome: (Int, ItemOutcome) -> Void = { _, _ in }
    /// Outcomes taken from the session, being handed to `onOutcome` (see ``ProducerSession/takeOutcomes(into:)``).
    @exclusivity(unchecked) private var delivering: [IndexedOutcome] = []
    /// The broker socket, the monitor and the input (2) given to ``begin(onOutcome:alsoWakeOn:)``.
    @exclusivity(unchecked) private var pollerWithInput: ZMQPoller? = nil

    /// Sends a `hello` at most this often while waiting for the broker's first answer.
    static let helloRetryMilliseconds: Int64 = 250

    public init(options: ProducerOptions, context: ZMQContext, logger: Logger) throws {
        if let problem = Endpoint.problem(options.broker, binding: false) { throw DroverError.badOption("--broker: \(problem)") }
        if let problem = QueueName.problem(options.queue) { throw DroverError.badOption("--queue: \(problem)") }
        self.options = options
        self.logger = logger
        socket = try ZMQSocket(context, type: .dealer, linger: 1000)
        monitor = try socket.monitor([.disconnected, .handshakes])
        handshakes = HandshakeWatch(server: "the broker", serverFlag: "--broker-key", usesKeys: options.security != nil)
        try options.security.configure(socket)
        // No ZMQ_IMMEDIATE: with it, libzmq drops the socket's pipe when the connection is
        // remade, and a message being read from it at that moment trips libzmq 4.3.4's
        // assertion `!_more (src/fq.cpp:112)`, aborting the process. It happened to a producer
        // resumed after a 20 s SIGSTOP with thousands of outcomes queued. Without it the pipe
        // outlives reconnections; what a dropped connection loses is offered again anyway
        // (see `monitor`).
        try socket.set(.reconnectIntervalMax(milliseconds: 1000))
        try socket.set(.maxMessageSize(bytes: 64 << 20))
        try socket.connect(options.broker)
        session = ProducerSession(options: options, runID: runID, ports: ProducerIO(socket: socket), logger: logger,
                                  welcome: Welcome(maxItemBytes: 0, heartbeatMilliseconds: 1000, fleet: .initial, instance: 0))
        _ = poller.add(socket)
        _ = poller.add(monitor)
        _ = socketPoller.add(socket)
    }

    deinit { close() }

    /// Waits for the broker's `welcome`, or throws ``DroverError/anyUnreachable`` after the timeout.
    @discardableResult
    public func connect() throws -> Welcome {
        if let welcome { return welcome }
        let start = monotonicMilliseconds()
        let limit = start + Int64(options.connectTimeoutSeconds * 1000)
        var lastHello: Int64 = -Self.helloRetryMilliseconds
        while monotonicMilliseconds() < limit {
            let now = monotonicMilliseconds()
            if now - lastHello >= Self.helloRetryMilliseconds {
                lastHello = now
                _ = try socket.send(Codec.encode(.hello(.producer)), dontWait: true)
            }
            while let event = try monitor.receiveMonitorEvent(dontWait: true) {
                if let refusal = handshakes.note(event) { throw DroverError.refused("\(refusal) (\(options.broker))") }
            }
            if try socketPoller.poll(timeout: 50)[0], let frames = try socket.receive(dontWait: true) {
                switch malformed.decode(frames, from: "the broker", logger: logger) {
                case .welcome(let w)?:
                    welcome = w
                    return w
                case .error(_, let text)?:
                    throw DroverError.refused("the broker at \(options.broker) refused this producer: \(text)")
                default:
                    continue
                }
            }
        }
        if let failure = handshakes.lastFailure {
            throw DroverError.refused("no answer from the broker at \(options.broker) within \(formatSeconds(options.connectTimeoutSeconds)): \(failure)")
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
        defer { pollerWithInput = nil }
        var exhausted = false
        var lastProgress: Int64 = 0
        while true {
            fill: while !exhausted && canOffer {
                switch next() {
                case .item(let payload): try offer(payload)
                case .refused(let reason): try refuse(reason)
                case .notYet: break fill
                case .end: exhausted = true
                }
            }
            try flush()
            if exhausted && unfinished == 0 { break }
            // Wake on the input only while it may give an item we can take: a readable input
            // with a full window (or one at its end) would wake every poll at once, a spin.
            try pump(timeoutMilliseconds: 100, watchingInput: !exhausted && canOffer)
            let now = monotonicMilliseconds()
            if let onProgress, now - lastProgress >= 100 {
                lastProgress = now
                onProgress(ProducerProgress(read: session.read, accepted: session.summary.accepted,
                                            finished: session.summary.succeeded + session.summary.failed))
            }
        }
        return session.summary
    }

    // MARK: The engine: offer, flush, pump

    /// Starts a run: connects if needed and starts new books. `onOutcome` is called from
    /// ``pump(timeoutMilliseconds:)`` with each item's index and outcome; `pump` also returns
    /// early when `alsoWakeOn` (an input descriptor) becomes readable.
    public func begin(onOutcome: @escaping (Int, ItemOutcome) -> Void = { _, _ in }, alsoWakeOn fd: Int32? = nil) throws {
        // The broker's latest welcome: a run after another starts where that one's keep-alive left off.
        if started { welcome = session.welcome }
        let welcome = try connect()
        self.onOutcome = onOutcome
        // A loss from before this run (or between runs) is not this run's: the welcome above
        // came after it.
        while try monitor.receiveMonitorEvent(dontWait: true) != nil {}
        if started { runID = UInt64.random(in: 1...UInt64.max) }
        session = ProducerSession(options: options, runID: runID, ports: ProducerIO(socket: socket), logger: logger, welcome: welcome)
        started = true
        pollerWithInput = nil
        if let fd {
            var p = ZMQPoller()
            _ = p.add(socket)
            _ = p.add(monitor)
            _ = p.add(fileDescriptor: fd)
            pollerWithInput = consume p
        }
    }

    /// Throws unless ``begin(onOutcome:alsoWakeOn:)`` has started a run.
    private func requireStarted() throws {
        guard started else { throw DroverError.notStarted("call Producer.begin(onOutcome:) before offering items") }
    }

    /// Whether the window has room for another item.
    public var canOffer: Bool { started && session.canOffer }

    /// Items not yet safe: not accepted, or with ``ProducerOptions/waitForResults`` not yet finished.
    public var unfinished: Int { session.unfinished }

    /// Adds an item to the current batch, sending the batch when it is full; returns the item's
    /// index. Call ``flush()`` to send a partial batch now (a lone item should not wait).
    @discardableResult
    public func offer(_ payload: [UInt8]) throws -> Int {
        try requireStarted()
        return try session.offer(payload)
    }

    /// Counts an item the input could not give (a line over the broker's limit) as read and
    /// refused with `reason`; returns its index.
    @discardableResult
    public func refuse(_ reason: String) throws -> Int {
        try requireStarted()
        return session.refuse(reason)
    }

    /// Sends the current batch. One that cannot be queued (the broker is not connected, or
    /// its pipe is full) is offered again shortly.
    public func flush() throws {
        try requireStarted()
        try session.flush()
    }

    /// Waits up to `timeoutMilliseconds` for the broker (and, when `watchingInput`, for the
    /// input given to ``begin(onOutcome:alsoWakeOn:)``), handles everything the broker sent
    /// (calling `onOutcome`), offers due retries again, keeps the connection alive, and notices
    /// a broker that went away. Throws once the broker has been gone for the reconnect timeout.
    /// Pass `watchingInput: false` while the input could not be taken anyway (a full window, an
    /// input at its end): a readable input would end every wait at once.
    public func pump(timeoutMilliseconds: Int, watchingInput: Bool = true) throws {
        try requireStarted()
        try session.resendDue()
        let ready = watchingInput && pollerWithInput != nil
            ? try pollerWithInput!.poll(timeout: timeoutMilliseconds)
            : try poller.poll(timeout: timeoutMilliseconds)
        if ready[0] {
            while let frames = try socket.receive(dontWait: true) {
                if let message = malformed.decode(frames, from: "the broker", logger: logger) { try session.received(message) }
            }
            // Outside the session's mutation: the callback may call back into this producer.
            if !session.outcomes.isEmpty {
                session.takeOutcomes(into: &delivering)
                for finished in delivering { onOutcome(finished.index, finished.outcome) }
                delivering.removeAll(keepingCapacity: true)
            }
        }
        if ready[1] {
            while let event = try monitor.receiveMonitorEvent(dontWait: true) {
                if event.kind == .disconnected { try session.connectionLost() }
                if let refusal = handshakes.note(event) { throw DroverError.refused("\(refusal) (\(options.broker))") }
            }
        }
        try session.keepAlive()
    }

    /// Closes the connection (also done when the producer is released). The monitor is
    /// stopped first: libzmq sends its events blockingly, so a monitor nobody reads could stall
    /// the socket's linger.
    public func close() {
        socket.stopMonitor()
        socket.close()
        monitor.close()
    }
}

/// The producer session's ports over the real socket and clock.
struct ProducerIO: ProducerPorts {
    let socket: ZMQSocket

    func now() -> Int64 { monotonicMilliseconds() }

    mutating func send(_ message: DroverMessage) throws -> Bool {
        try socket.send(Codec.encode(message), dontWait: true)
    }
}
