import DroverProtocol
import Logging

/// What a ``ProducerSession`` asks of the world: the clock and the link to the broker.
/// ``Producer`` implements it over a socket; tests implement it with an array and a number.
protocol ProducerPorts {
    /// Monotonic milliseconds.
    func now() -> Int64
    /// Sends to the broker without blocking; `false` when it is not connected or its pipe is
    /// full (nothing was sent).
    mutating func send(_ message: DroverMessage) throws -> Bool
}

/// One run of a producer, as a state machine: items offered, messages from the broker and
/// the loss of the connection go in; `submit`s, keep-alive `hello`s and each item's outcome
/// come out. No socket: the clock and the link are ``ProducerPorts``, so unit tests drive
/// acceptance, rejection, results and every kind of resubmission without a broker.
///
/// It answers for every item until it is safe: accepted, or with ``ProducerOptions/waitForResults``
/// finished. When the broker may have lost items or outcomes (it restarted, it went silent, or
/// the connection dropped and took what was queued on it), every unfinished item is offered
/// again; the broker drops duplicates of ids it holds or completed recently, and answers those
/// with their kept outcome, so nothing runs twice and nothing is waited for in vain.
struct ProducerSession<Ports: ProducerPorts> {
    /// Whether the broker can be trusted to have what it acknowledged.
    enum Link: Equatable {
        /// Connected and heard from within the liveness window.
        case up
        /// Silent past the liveness window, or the connection was lost, since `since`: every
        /// unfinished item is offered again when the broker's `welcome` arrives.
        case lost(since: Int64)
    }

    let options: ProducerOptions
    /// Distinguishes this run's item ids from every other producer's.
    let runID: UInt64
    var ports: Ports
    let logger: Logger

    /// The broker's latest `welcome`: its limits and which process it is.
    private(set) var welcome: Welcome
    private(set) var link = Link.up
    private(set) var summary = ProducerSummary()
    /// Unfinished items by index: until accepted, or with `--wait` until their outcome.
    private(set) var outstanding: UnfinishedItems
    /// Unfinished items to offer again at `retryAt`.
    private var retry: [UInt64] = []
    private var retryAt: Int64 = 0
    private var batch: [SubmittedItem] = []
    private var batchBytes = 0
    private var nextIndex: UInt64 = 0
    private var lastHeard: Int64
    private var lastSent: Int64
    /// A `hello` should go out as soon as the link takes one (the connection was lost).
    private var helloDue = false
    /// Outcomes received and not yet taken (``takeOutcomes()``), with their items' indices.
    /// Gathered rather than handed to a callback from inside a mutation of this session, so
    /// that the callback may call back into the producer.
    private(set) var outcomes: [IndexedOutcome] = []

    init(options: ProducerOptions, runID: UInt64, ports: Ports, logger: Logger, welcome: Welcome) {
        self.options = options
        self.runID = runID
        self.welcome = welcome
        self.ports = ports
        self.logger = logger
        outstanding = UnfinishedItems(window: options.window)
        lastHeard = ports.now()
        lastSent = lastHeard
    }

    /// Items taken from the input so far.
    var read: Int { Int(nextIndex) }
    /// Whether the window has room for another item.
    var canOffer: Bool { outstanding.count < options.window }
    /// Items not yet safe: not accepted, or with ``ProducerOptions/waitForResults`` not yet finished.
    var unfinished: Int { outstanding.count }
    private var heartbeat: Int64 { Int64(welcome.heartbeatMilliseconds) }

    // MARK: Items in

    /// Adds an item to the current batch, sending the batch when it is full; returns the item's
    /// index. An item over the broker's limit is refused here and never sent.
    mutating func offer(_ payload: [UInt8]) throws -> Int {
        let index = nextIndex
        nextIndex += 1
        summary.read = Int(nextIndex)
        if payload.count > Int(welcome.maxItemBytes) {
            summary.rejected[Int(index)] = "item is \(payload.count) bytes; the broker accepts at most \(welcome.maxItemBytes) (broker --max-item-size)"
            return Int(index)
        }
        summary.sent += 1
        outstanding.add(index, payload: payload)
        if case .lost = link {
            retry.append(index)  // goes out when the broker is back
            return Int(index)
        }
        try add(index, payload)
        return Int(index)
    }

    /// Counts an item the input could not give (a line over the broker's limit) as read and
    /// refused with `reason`; returns its index.
    mutating func refuse(_ reason: String) -> Int {
        let index = Int(nextIndex)
        nextIndex += 1
        summary.read = Int(nextIndex)
        summary.rejected[index] = reason
        return index
    }

    private mutating func add(_ index: UInt64, _ payload: [UInt8]) throws {
        batch.append(SubmittedItem(id: itemID(index), payload: payload[...]))
        batchBytes += payload.count
        if batch.count >= options.batchItems || batchBytes >= options.batchBytes { try flush() }
    }

    /// Sends the current batch. One that cannot be queued (the broker is not connected, or its
    /// pipe is full) is offered again shortly.
    mutating func flush() throws {
        guard !batch.isEmpty else { return }
        let message = DroverMessage.submit(Submit(queue: options.queue, wantsResults: options.waitForResults,
                                                         itemTimeoutMilliseconds: options.itemTimeoutMilliseconds, items: batch))
        if try ports.send(message) {
            lastSent = ports.now()
        } else {
            retry += batch.map(\.id.low)
            retryAt = ports.now() + ProducerTimings.retryAfterFullMilliseconds
        }
        batch.removeAll(keepingCapacity: true)
        batchBytes = 0
    }

    /// Offers again the items whose retry has fallen due, unless the broker is away.
    mutating func resendDue() throws {
        guard link == .up, !retry.isEmpty, ports.now() >= retryAt else { return }
        let again = retry
        retry.removeAll()
        for index in again {
            guard let item = outstanding[index], !item.accepted else { continue }
            try add(index, item.payload)
        }
        try flush()
    }

    // MARK: The broker

    /// A message from the broker. Throws when the broker refuses this producer.
    mutating func received(_ message: DroverMessage) throws {
        lastHeard = ports.now()
        switch message {
        case .welcome(let again):
            // The keep-alive's answer. After silence or a lost connection, or from a new broker
            // process, everything unfinished is offered again.
            let restarted = again.instance != welcome.instance
            if restarted || link != .up {
                logger.warning(restarted ? "the broker restarted; offering every unfinished item again"
                                         : "the broker is back; offering every unfinished item again",
                               metadata: ["items": "\(outstanding.count)"])
                summary.accepted -= outstanding.acceptedCount  // counted again when re-accepted
                retry = outstanding.resetAcceptance()
                retryAt = 0
                link = .up
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
                if rejection.code.isWorthRetrying {
                    retry.append(itemID.low)  // stays in the window until accepted
                    retryAt = ports.now() + ProducerTimings.retryAfterFullMilliseconds
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
                self.outcomes.append(IndexedOutcome(index: Int(outcome.id.low), outcome: outcome))
            }
        case .error(.unknownPeer, _):
            // The broker forgot us (it restarted, or this process was paused past its liveness
            // window) and dropped a submit: say hello, and offer everything unfinished again.
            try startOver("the broker does not know this producer (it restarted, or this process was paused); introducing it again")
        case .error(let code, let text):
            throw DroverError.refused("the broker refused a message (\(code)): \(text)")
        case .hello, .heartbeat, .submit, .credit, .deliver, .done, .handBack, .bye, .handlerState, .fleet, .statusRequest,
             .statusReply, .exitRequest, .exitProgress, .exitFinished, .deadLetters, .deadLetterReply:
            break
        }
    }

    /// The connection to the broker dropped, and with it whatever was queued on it both ways:
    /// say hello at once, and offer everything unfinished again once the broker answers.
    mutating func connectionLost() throws {
        try startOver("lost the connection to the broker; reconnecting")
    }

    /// The broker may not have what it acknowledged: says hello at once; its `welcome` has
    /// everything unfinished offered again.
    private mutating func startOver(_ warning: Logger.Message) throws {
        guard link == .up else { return }
        link = .lost(since: ports.now())
        logger.warning(warning, metadata: ["broker": "\(options.broker)"])
        helloDue = true
        try sayHello()
    }

    /// The outcomes received since the last call, in the order they arrived.
    mutating func takeOutcomes() -> [IndexedOutcome] {
        var taken: [IndexedOutcome] = []
        takeOutcomes(into: &taken)
        return taken
    }

    /// Swaps the outcomes received since the last call into `spare`, which must be empty; its
    /// storage becomes this session's, so two buffers serve a whole run without allocating.
    mutating func takeOutcomes(into spare: inout [IndexedOutcome]) {
        swap(&spare, &outcomes)
    }

    /// Keeps the connection alive (`hello`, whose `welcome` also says whether the broker
    /// restarted) and notices a broker gone silent. Throws once it has been gone for the
    /// reconnect timeout.
    mutating func keepAlive() throws {
        let now = ports.now()
        if helloDue || now - lastSent >= heartbeat { try sayHello() }
        guard now - lastHeard > Int64(welcome.livenessMilliseconds) else { return }
        switch link {
        case .up:
            link = .lost(since: now)
            logger.warning("lost contact with the broker; reconnecting", metadata: ["broker": "\(options.broker)"])
        case .lost(let since):
            if Double(now - since) > options.reconnectTimeoutSeconds * 1000 {
                throw DroverError.lostContact("broker", options.broker,
                    "no answer for \(formatSeconds(options.reconnectTimeoutSeconds)) with \(outstanding.count) items unfinished")
            }
        }
    }

    private mutating func sayHello() throws {
        guard try ports.send(.hello(.producer)) else { return }
        lastSent = ports.now()
        helloDue = false
    }

    private func itemID(_ index: UInt64) -> ItemID { ItemID(high: runID, low: index) }
}

extension Hello {
    /// A producer's `hello`: its first message, and its keep-alive.
    static var producer: Hello { Hello(role: .producer, name: defaultPeerName()) }
}

/// An item's outcome with the item's index in the input. A struct rather than a tuple: an
/// array of tuples is destroyed through generic metadata, one element at a time.
struct IndexedOutcome {
    var index: Int
    var outcome: ItemOutcome
}

/// The producer session's fixed timings (a generic type cannot hold stored statics).
enum ProducerTimings {
    /// How long a queue-full rejection waits before the items are offered again.
    static let retryAfterFullMilliseconds: Int64 = 100
}
