import DroverProtocol
import Logging

/// What a ``WorkerSession`` asks of the world outside it: the link to the broker, the handler
/// pool and the handler. ``WorkerLoop`` implements it over a socket and real threads; tests
/// implement it with arrays.
protocol WorkerPorts {
    /// Sends to the broker without blocking; `false` when it is not connected or its pipe is full
    /// (nothing was sent).
    mutating func send(_ message: DroverMessage) -> Bool
    /// Hands jobs to the handler threads; returns how many the pool took, from the front.
    mutating func run(_ jobs: [HeldJob]) -> Int
    /// Takes back the jobs no handler thread has started.
    mutating func takeUnstarted() -> [HeldJob]
    /// Stops the items that are running (the drain deadline passed, or a stop at once).
    mutating func cancelRunning()
    /// The broker welcomed this worker (each registration, and each keep-alive answer).
    mutating func welcomed(_ welcome: Welcome)
    /// Jobs in the pool that no handler thread has started.
    var queuedInPool: Int { get }
    /// The worker now wants to hold `capacity` items (the lookahead changed).
    mutating func resized(capacity: Int)
}

/// A worker's protocol with the broker, as a state machine: messages, finished jobs, requests
/// and the time go in; messages to send, jobs to run and the worker's exit come out, through
/// ``WorkerPorts``. No sockets and no clock: every input carries `now` (monotonic ms), so unit
/// tests drive registration, credit, drain, hand-back and the goodbye wait without processes.
///
/// Registration and the worker's life are two independent states: a worker may lose and regain
/// the broker while serving, draining or leaving.
struct WorkerSession<Ports: WorkerPorts> {
    /// Where the worker is in its life.
    enum Phase: Equatable {
        /// Granting credit and running items.
        case serving
        /// No new work; running items finish until `deadline` (monotonic ms).
        case draining(deadline: Int64, reason: String)
        /// Done with work; saying goodbye. `byeSentAt` is nil while the broker is unreachable
        /// (the goodbye goes when it is back); the worker gives up waiting at `giveUpAt`.
        case leaving(exit: WorkerExit, reason: String, byeSentAt: Int64?, giveUpAt: Int64)
    }

    /// Whether the broker knows this worker.
    enum Registration: Equatable {
        /// Not registered. `helloInFlight`: a `hello` went out and its `welcome` has not come.
        /// Only the first `welcome` after a `hello` grants credit: a second one (two hellos
        /// crossed in flight) would otherwise double it.
        case unregistered(helloInFlight: Bool)
        case registered
    }

    let options: WorkerOptions
    var ports: Ports
    let logger: Logger

    private(set) var phase = Phase.serving
    private(set) var registration = Registration.unregistered(helloInFlight: false)
    /// Deliveries handed to the pool and not yet finished.
    private(set) var inPool: HeldItems
    /// Outcomes the broker has not taken yet (it was unreachable when they finished).
    private(set) var unsentOutcomes: [ItemOutcome] = []
    /// The credit the broker holds for us, as far as we know.
    private(set) var brokerCredit = CreditGrants()
    /// How many items to hold (`--lookahead`, or sized from what this worker observes).
    private(set) var sizer: LookaheadSizer
    /// Deliveries handed back while the broker was unreachable, to tell it when it is back.
    private(set) var unsentHandBack: [DeliveryRef] = []
    /// Why the connection cannot be made, when the socket's monitor knows (a refused key):
    /// said in the "cannot reach the broker" warning.
    var connectionProblem: String?
    private var lastRefusal = ""
    private var lastRefusalLogged: Int64 = .min / 2
    /// The handler's health as the broker last heard it; nil when this registration has not.
    private var reportedHealth: HandlerHealth?
    private var fleetEpoch: UInt64 = 0
    private var lastSent: Int64 = 0
    private var lastHeard: Int64 = 0
    private var lastHello: Int64 = 0
    private var lastTurn: Int64 = 0
    private var lastWarned: Int64 = 0
    private let startedAt: Int64

    /// The broker's heartbeat interval and liveness window, from its latest `welcome`.
    private var brokerTimings: (heartbeat: Int64, liveness: Int64)?
    /// How often to heartbeat: ours, or the broker's if it asks for more often.
    var heartbeat: Int64 { min(Int64(options.heartbeatMilliseconds), brokerTimings?.heartbeat ?? .max) }
    /// Broker silence after which it is taken to be gone; also how long a pause of this process
    /// makes the broker drop us. The broker's own window once it has said it.
    var liveness: Int64 { brokerTimings?.liveness ?? Int64(options.heartbeatMilliseconds) * Int64(options.liveness) }
    var isRegistered: Bool { registration == .registered }

    init(options: WorkerOptions, ports: Ports, logger: Logger, now: Int64) {
        self.options = options
        self.ports = ports
        self.logger = logger
        sizer = LookaheadSizer(threads: options.threads, fixed: options.lookahead)
        inPool = HeldItems(capacity: sizer.maxCapacity)
        startedAt = now
        lastTurn = now
    }

    /// Says hello: the session begins.
    mutating func start(now: Int64) {
        ports.resized(capacity: sizer.capacity)
        sayHello(now: now)
    }

    /// Called on every turn of the loop, before anything else. A gap since the last turn past
    /// the liveness window means this process was paused (SIGSTOP, a VM freeze): the broker has
    /// given up on us and closed the connection, so anything sent now would be lost. Register
    /// again first; outcomes wait for the new registration.
    mutating func turn(now: Int64) {
        if now - lastTurn > liveness, isRegistered {
            logger.warning("this worker was paused past the liveness window; registering again", metadata: ["paused-ms": "\(now - lastTurn)"])
            registerAgain(now: now)
        }
        lastTurn = now
    }

    /// Stops at once (a second SIGTERM): a goodbye without waiting lets the broker redeliver
    /// what this worker held at once.
    mutating func stopNow(now: Int64) -> WorkerExit {
        _ = send(.bye(.stoppedAtOnce, "stopped at once"), now: now)
        ports.cancelRunning()
        logger.warning("worker stopping at once; the broker redelivers its items", metadata: ["items": "\(inPool.count)"])
        return .stopped
    }

    // MARK: Messages from the broker and the controller

    /// A message from the broker; returns the worker's exit when this ends its life.
    mutating func received(_ message: DroverMessage, now: Int64) -> WorkerExit? {
        lastHeard = now
        switch message {
        case .welcome(let welcome):
            let grants = registration == .unregistered(helloInFlight: true)
            registration = .registered
            logger.info("registered with the broker", metadata: ["broker": "\(options.broker)", "queue": "\(options.queue)", "threads": "\(options.threads)"])
            ports.welcomed(welcome)
            brokerTimings = (Int64(welcome.heartbeatMilliseconds), Int64(welcome.livenessMilliseconds))
            // A registration starts with no credit: the grant below covers every free slot,
            // including those freed by outcomes the broker has not heard of yet.
            if grants {
                brokerCredit.reset()
                reportedHealth = nil
            }
            if !unsentOutcomes.isEmpty {
                let outcomes = unsentOutcomes
                unsentOutcomes.removeAll()
                report(outcomes, grantingCredit: false, now: now)
            }
            switch phase {
            case .serving:
                let free = sizer.capacity - inPool.count - brokerCredit.total
                if grants && free > 0 && send(.credit(UInt32(free)), now: now) { brokerCredit.grant(free) }
            case .draining:
                handBack(unsentHandBack, now: now)  // also tells this broker we take no more work
            case .leaving(let exit, let reason, _, let giveUpAt):
                handBack(unsentHandBack, now: now)
                phase = .leaving(exit: exit, reason: reason, byeSentAt: send(.bye(exit.byeCode, reason), now: now) ? now : nil, giveUpAt: giveUpAt)
            }
            applyFleet(welcome.fleet, from: "broker", now: now)
        case .deliver(let deliveries):
            deliver(deliveries, now: now)
        case .fleet(let state):
            applyFleet(state, from: "broker", now: now)
        case .heartbeat:
            break
        case .bye:
            if case .leaving(let exit, _, _, _) = phase { return exit }
        case .error(let code, let text):
            if code == .unknownPeer {
                logger.warning("the broker does not know this worker (restarted?); registering again")
                registerAgain(now: now)
            } else {
                // Once per reason every few seconds: a revoked key is refused every heartbeat.
                if text != lastRefusal || now - lastRefusalLogged >= WorkerTimings.warnEveryMilliseconds {
                    lastRefusal = text
                    lastRefusalLogged = now
                    logger.error("the broker refused a message", metadata: ["code": "\(code)", "reason": "\(text)"])
                }
            }
        case .hello, .submit, .accepted, .rejected, .result, .credit, .done, .handBack, .handlerState,
             .statusRequest, .statusReply, .exitRequest, .exitProgress, .exitFinished, .deadLetters, .deadLetterReply:
            logger.warning("ignored an unexpected message from the broker", metadata: ["command": "\(message.command)"])
        }
        return nil
    }

    /// A message from the controller's publisher.
    mutating func receivedFromController(_ message: DroverMessage, now: Int64) {
        if case .fleet(let state) = message {
            applyFleet(state, from: "controller", now: now)
        } else {
            logger.warning("ignored an unexpected message from the controller", metadata: ["command": "\(message.command)"])
        }
    }

    /// Items from the broker: each takes a free slot and goes to the pool; what does not fit
    /// (more than our credit, or we no longer serve) goes straight back.
    private mutating func deliver(_ deliveries: [Delivery], now: Int64) {
        // Sent before the broker read our latest `hello`, which named what we hold without
        // these: the broker takes them back when it reads it (``Hello/held``), so running them
        // would only run them twice.
        guard isRegistered else {
            logger.debug("ignored deliveries sent before the broker read this worker's hello", metadata: ["items": "\(deliveries.count)"])
            return
        }
        var jobs: [HeldJob] = []
        let usedUpAGrant = brokerCredit.use(deliveries.count)
        if case .serving = phase {
            // They used up a whole grant (the broker had items waiting) and found no job
            // waiting for a thread: the threads ran dry during the round trip.
            let starved = usedUpAGrant && ports.queuedInPool == 0
            resize { sizer in
                sizer.received(payloadBytes: deliveries.lazy.map(\.payload.count))
                if starved { sizer.starved() }
            }
            jobs.reserveCapacity(deliveries.count)
            // Deliveries beyond the credit we counted (sent against a grant from before a new
            // registration) are leases all the same: held while slots are free, since a
            // hand-back also tells the broker to send no more.
            for d in deliveries {
                guard let slot = inPool.hold(d) else { break }
                jobs.append(HeldJob(slot: slot, delivery: d))
            }
            let taken = ports.run(jobs)
            for job in jobs[taken...] { inPool.release(job.slot, id: job.delivery.id, attempt: job.delivery.attempt) }
            jobs.removeSubrange(taken...)
        }
        let refused = deliveries[jobs.count...].map { DeliveryRef(id: $0.id, attempt: $0.attempt) }
        if !refused.isEmpty {
            if case .serving = phase {
                logger.error("the broker sent more items than this worker's credit; handing them back", metadata: ["items": "\(refused.count)"])
            }
            _ = send(.handBack(refused), now: now)
        }
    }

    // MARK: Work

    /// How the handler fares now: the broker hears of each change (and, after each new
    /// registration, of anything but a clean record).
    mutating func handler(_ health: HandlerHealth, now: Int64) {
        guard isRegistered, health != (reportedHealth ?? HandlerHealth()) else { return }
        if send(.handlerState(health), now: now) { reportedHealth = health }
    }

    /// Items finished on the handler threads: their slots are free again.
    mutating func finished(_ jobs: [FinishedJob], now: Int64) {
        var outcomes: [ItemOutcome] = []
        outcomes.reserveCapacity(jobs.count)
        for job in jobs {
            inPool.release(job.slot, id: job.outcome.id, attempt: job.outcome.attempt)
            outcomes.append(job.outcome)
        }
        resize { $0.finished(microseconds: jobs.lazy.map(\.microseconds)) }
        report(outcomes, grantingCredit: true, now: now)
    }

    /// Updates the lookahead, telling the ports when the capacity changes.
    private mutating func resize(_ update: (inout LookaheadSizer) -> Void) {
        let before = sizer.capacity
        update(&sizer)
        if sizer.capacity != before { ports.resized(capacity: sizer.capacity) }
    }

    /// Sends outcomes, with credit for the slots free under the capacity (while serving), or
    /// keeps them for when the broker is back.
    private mutating func report(_ outcomes: [ItemOutcome], grantingCredit: Bool, now: Int64) {
        var credit = 0
        if grantingCredit, case .serving = phase { credit = max(0, sizer.capacity - inPool.count - brokerCredit.total) }
        guard isRegistered && send(.done(credit: UInt32(credit), outcomes), now: now) else {
            unsentOutcomes += outcomes
            return
        }
        brokerCredit.grant(credit)
    }

    private mutating func applyFleet(_ state: FleetState, from source: String, now: Int64) {
        guard state.epoch > fleetEpoch else { return }
        fleetEpoch = state.epoch
        if state.phase == .exiting {
            drain(reason: "fleet exit (epoch \(state.epoch), from the \(source))", deadline: state.deadlineMilliseconds, now: now)
        }
    }

    /// Stops taking work: unstarted items go back to the broker, running ones may finish until
    /// `deadline` ms from now. Only the first call counts.
    mutating func drain(reason: String, deadline: UInt32, now: Int64) {
        guard case .serving = phase else { return }
        let unstarted = ports.takeUnstarted()
        for job in unstarted { inPool.release(job.slot, id: job.delivery.id, attempt: job.delivery.attempt) }
        phase = .draining(deadline: now + Int64(deadline), reason: reason)
        logger.notice("draining", metadata: ["reason": "\(reason)", "handing-back": "\(unstarted.count)",
                                             "running": "\(inPool.count)", "deadline-ms": "\(deadline)"])
        handBack(unstarted.map { DeliveryRef(id: $0.delivery.id, attempt: $0.delivery.attempt) }, now: now)
    }

    /// Hands deliveries back now, or when the broker is reachable again.
    private mutating func handBack(_ refs: [DeliveryRef], now: Int64) {
        if isRegistered && send(.handBack(refs), now: now) {
            unsentHandBack.removeAll()
        } else {
            unsentHandBack = refs
        }
    }

    // MARK: Timers

    /// Heartbeats, hello retries, the broker's liveness, the drain deadline and the goodbye
    /// wait; returns the worker's exit when its life ends.
    mutating func timers(now: Int64) -> WorkerExit? {
        switch registration {
        case .unregistered(let helloInFlight):
            let wait = helloInFlight ? WorkerTimings.helloAnswerMilliseconds : WorkerTimings.helloRetryMilliseconds
            if now - lastHello >= wait { sayHello(now: now) }
            if now - startedAt >= 3000, now - lastWarned >= WorkerTimings.warnEveryMilliseconds {
                lastWarned = now
                logger.warning("cannot reach the broker\(connectionProblem.map { ": \($0)" } ?? ""); still trying", metadata: ["broker": "\(options.broker)"])
            }
        case .registered:
            if now - lastHeard > liveness {
                logger.warning("the broker has been silent past the liveness window; registering again",
                               metadata: ["silent-ms": "\(now - lastHeard)"])
                registerAgain(now: now)
            } else if now - lastSent >= heartbeat {
                _ = send(.heartbeat, now: now)
            }
        }

        switch phase {
        case .serving:
            return nil
        case .draining(let deadline, let reason):
            if inPool.isEmpty {
                leave(.drained(reason: reason), byeReason: reason, now: now)
            } else if now >= deadline {
                let abandoned = inPool.all
                logger.warning("drain deadline passed; handing running items back and stopping them",
                               metadata: ["items": "\(abandoned.count)"])
                ports.cancelRunning()
                inPool.removeAll()
                handBack(unsentHandBack + abandoned, now: now)
                leave(.deadlinePassed(abandoned: abandoned.count), byeReason: WorkerTimings.deadlineByeReason, now: now)
            }
            return nil
        case .leaving(let exit, _, let byeSentAt, let giveUpAt):
            if let byeSentAt, now - byeSentAt > 2 * heartbeat {
                logger.warning("the broker did not acknowledge this worker's goodbye; exiting anyway")
                return exit
            }
            if byeSentAt == nil, now >= giveUpAt {
                logger.warning("the broker is still unreachable; exiting without saying goodbye (it redelivers what this worker held)",
                               metadata: ["unsent-outcomes": "\(unsentOutcomes.count)"])
                return exit
            }
            return nil
        }
    }

    private mutating func leave(_ exit: WorkerExit, byeReason: String, now: Int64) {
        let sent = isRegistered && unsentOutcomes.isEmpty && unsentHandBack.isEmpty && send(.bye(exit.byeCode, byeReason), now: now)
        if !sent { logger.notice("waiting for the broker to come back to say goodbye", metadata: ["broker": "\(options.broker)"]) }
        phase = .leaving(exit: exit, reason: byeReason, byeSentAt: sent ? now : nil,
                         giveUpAt: now + WorkerTimings.goodbyeWaitMilliseconds)
    }

    /// Registers again. A hello already in flight (this worker was not registered) stays in
    /// flight: its welcome still grants credit, even if the new hello cannot go out.
    private mutating func registerAgain(now: Int64) {
        if registration == .registered { registration = .unregistered(helloInFlight: false) }
        sayHello(now: now)
    }

    private mutating func sayHello(now: Int64) {
        lastHello = now
        // Everything this worker answers for: a broker that knew it returns its other leases
        // to the queue (messages lost with a dropped connection).
        let held = inPool.all + unsentOutcomes.map { DeliveryRef(id: $0.id, attempt: $0.attempt) } + unsentHandBack
        let hello = Hello(role: .worker, name: options.name, queue: options.queue, concurrency: UInt32(options.threads), held: held)
        let sent = send(.hello(hello), now: now)
        if case .unregistered(let inFlight) = registration {
            registration = .unregistered(helloInFlight: sent || inFlight)
        }
    }

    private mutating func send(_ message: DroverMessage, now: Int64) -> Bool {
        let sent = ports.send(message)
        if sent { lastSent = now }
        return sent
    }
}

/// The worker session's fixed timings and words (a generic type cannot hold stored statics).
enum WorkerTimings {
    /// How often `hello` is offered while unregistered and not yet connected. With ZMQ_IMMEDIATE
    /// an offer made before the TCP connection is up is refused locally (nothing goes on the
    /// wire), so this only bounds how soon after connecting the worker registers.
    static let helloRetryMilliseconds: Int64 = 100
    /// How long a `hello` that did go out waits for its `welcome` before another is sent.
    static let helloAnswerMilliseconds: Int64 = 1000
    /// Warn about an unreachable broker this often.
    static let warnEveryMilliseconds: Int64 = 5000
    /// The goodbye reason (for people; the code says it to programs) of a worker whose drain
    /// deadline passed.
    static let deadlineByeReason = "drain deadline passed"
    /// How long a leaving worker waits for an unreachable broker to come back, so that its
    /// outcomes and goodbye are delivered rather than redelivered elsewhere.
    static let goodbyeWaitMilliseconds: Int64 = 30_000
}
