import DroverProtocol
import Logging
import ZeroMQ

/// How a ``Producer`` sends. Every property has a documented default.
public struct ProducerOptions: Sendable {
    /// The broker, for example `tcp://broker-host:5555`.
    public var broker: String
    /// The queue items go to. Default `default`.
    public var queue = "default"
    /// Wait for each item's outcome (`drover send --wait`). Default `false`: return once the
    /// broker has accepted every item.
    public var waitForResults = false
    /// How long to wait for the broker's first answer. Default 5 s.
    public var connectTimeoutSeconds = 5.0
    /// How long the broker may stay silent once connected. Default 10 s (it answers a heartbeat every second).
    public var silenceTimeoutSeconds = 10.0
    /// Most items per `submit` message. Default 256: large enough to amortise per-message cost,
    /// small enough that the first items are accepted (and start running) at once.
    public var batchItems = 256
    /// Most payload bytes per `submit` message. Default 256 KiB.
    public var batchBytes = 256 * 1024
    /// Most items sent but not yet accepted. Default 10,000: bounds the producer's memory and
    /// keeps it from flooding a broker that is slow to accept.
    public var window = 10_000

    public init(broker: String) {
        self.broker = broker
    }
}

/// What happened to a run of items, by the producer's count.
public struct ProducerSummary: Sendable, Equatable {
    /// Items taken from the input.
    public var read = 0
    /// Items sent to the broker (all but those refused before sending).
    public var sent = 0
    public var accepted = 0
    public var succeeded = 0
    public var failed = 0
    /// Items refused (by the broker or, for oversize items, before sending): index and reason.
    public var rejected: [Int: String] = [:]
}

/// Progress, reported while a run goes on.
public struct ProducerProgress: Sendable {
    public var read: Int
    public var accepted: Int
    public var finished: Int
}

/// Sends items to the broker and collects acceptances and, on request, outcomes.
///
/// Not `Sendable`: it owns a socket, so it stays on the thread that made it.
public final class Producer {
    public let options: ProducerOptions
    private let socket: ZMQSocket
    private let logger: Logger
    private var welcome: Welcome?
    /// Distinguishes this run's item ids from every other producer's.
    private let runID = UInt64.random(in: 1...UInt64.max)
    private var lastHeard: Int64 = 0
    private var lastSent: Int64 = 0

    /// Sends a `hello` at most this often while waiting for the broker's first answer.
    static let helloRetryMilliseconds: Int64 = 250
    /// How long a queue-full rejection waits before the items are offered again.
    static let retryAfterFullMilliseconds: Int64 = 100

    public init(options: ProducerOptions, context: ZMQContext, logger: Logger) throws {
        if let problem = Endpoint.problem(options.broker, binding: false) { throw DroverError.badOption("--broker: \(problem)") }
        if let problem = Dispatcher.queueNameProblem(options.queue) { throw DroverError.badOption("--queue: \(problem)") }
        self.options = options
        self.logger = logger
        socket = try ZMQSocket(context, type: .dealer, linger: 1000)
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
                switch try? Codec.decode(frames) {
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
    /// `onOutcome` gets the item's index (0-based, in input order) and its outcome.
    public func send<S: Sequence>(
        _ items: S,
        onOutcome: (Int, ItemOutcome) -> Void = { _, _ in },
        onProgress: ((ProducerProgress) -> Void)? = nil
    ) throws -> ProducerSummary where S.Element == [UInt8] {
        let welcome = try connect()
        var summary = ProducerSummary()
        var iterator = items.makeIterator()
        var exhausted = false
        var unaccepted: [UInt64: [UInt8]] = [:]     // index → payload, until accepted
        var awaiting: Set<UInt64> = []             // accepted, outcome not yet seen
        var retry: [UInt64] = []                   // unaccepted items to offer again at `retryAt`
        var retryAt: Int64 = 0
        var nextIndex: UInt64 = 0
        var lastProgress: Int64 = 0
        var poller = ZMQPoller()
        _ = poller.add(socket)

        func id(_ index: UInt64) -> ItemID { ItemID(high: runID, low: index) }

        while true {
            let now = monotonicMilliseconds()
            // Offer items while the window has room: retries first, then new input. A batch
            // that cannot be queued (broker not connected, pipe full) waits for the next turn.
            var batch: [SubmittedItem] = []
            var batchBytes = 0
            var blocked = false
            func flush() throws {
                guard !batch.isEmpty else { return }
                let message = DroverMessage.submit(Submit(queue: options.queue, wantsResults: options.waitForResults, items: batch))
                if try socket.send(Codec.encode(message), dontWait: true) {
                    lastSent = monotonicMilliseconds()
                } else {
                    blocked = true
                    retry += batch.map(\.id.low)
                    retryAt = now + Self.retryAfterFullMilliseconds
                }
                batch.removeAll(keepingCapacity: true)
                batchBytes = 0
            }
            if !retry.isEmpty && now >= retryAt {
                let again = retry
                retry.removeAll()
                for index in again where unaccepted[index] != nil {
                    batch.append(SubmittedItem(id: id(index), payload: unaccepted[index]!))
                    if batch.count >= options.batchItems { try flush() }
                }
                try flush()
            }
            while !blocked && !exhausted && unaccepted.count < options.window {
                guard let payload = iterator.next() else { exhausted = true; break }
                let index = nextIndex
                nextIndex += 1
                if payload.count > Int(welcome.maxItemBytes) {
                    summary.rejected[Int(index)] = "item is \(payload.count) bytes; the broker accepts at most \(welcome.maxItemBytes) (broker --max-item-size)"
                    continue
                }
                summary.sent += 1
                unaccepted[index] = payload
                batch.append(SubmittedItem(id: id(index), payload: payload))
                batchBytes += payload.count
                if batch.count >= options.batchItems || batchBytes >= options.batchBytes { try flush() }
            }
            try flush()

            if exhausted && unaccepted.isEmpty && retry.isEmpty && awaiting.isEmpty {
                summary.read = Int(nextIndex)
                break
            }

            if try poller.poll(timeout: 100)[0] {
                while let frames = try socket.receive(dontWait: true) {
                    lastHeard = monotonicMilliseconds()
                    guard let message = try? Codec.decode(frames) else { continue }
                    switch message {
                    case .accepted(let ids):
                        for itemID in ids where itemID.high == runID && unaccepted.removeValue(forKey: itemID.low) != nil {
                            summary.accepted += 1
                            if options.waitForResults { awaiting.insert(itemID.low) }
                        }
                    case .rejected(let rejection):
                        for itemID in rejection.ids where itemID.high == runID {
                            guard unaccepted[itemID.low] != nil else { continue }
                            if rejection.code == .queueFull {
                                retry.append(itemID.low)  // stays in the window until accepted
                                retryAt = monotonicMilliseconds() + Self.retryAfterFullMilliseconds
                            } else {
                                unaccepted[itemID.low] = nil
                                summary.rejected[Int(itemID.low)] = rejection.reason
                            }
                        }
                    case .result(let outcomes):
                        for outcome in outcomes where outcome.id.high == runID && awaiting.remove(outcome.id.low) != nil {
                            if outcome.status == .succeeded { summary.succeeded += 1 } else { summary.failed += 1 }
                            onOutcome(Int(outcome.id.low), outcome)
                        }
                    case .error(let code, let text):
                        throw DroverError.refused("the broker refused a message (\(code)): \(text)")
                    default:
                        break
                    }
                }
            }
            let after = monotonicMilliseconds()
            if after - lastSent >= 1000, try socket.send(Codec.encode(.heartbeat), dontWait: true) { lastSent = after }
            if Double(after - lastHeard) > options.silenceTimeoutSeconds * 1000 {
                throw DroverError.lostContact("broker", options.broker,
                    "no answer for \(formatSeconds(options.silenceTimeoutSeconds)) with \(unaccepted.count) items not yet accepted and \(awaiting.count) outcomes outstanding")
            }
            if let onProgress, after - lastProgress >= 100 {
                lastProgress = after
                onProgress(ProducerProgress(read: Int(nextIndex), accepted: summary.accepted, finished: summary.succeeded + summary.failed))
            }
        }
        return summary
    }

    /// Closes the connection (also done when the producer is released).
    public func close() { socket.close() }
}
