import DroverDispatch
import DroverProtocol
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// How a ``Controller`` runs. Every property has a documented default.
public struct ControllerOptions: Sendable {
    /// The broker, for example `tcp://broker-host:5555`.
    public var broker: String
    /// Where fleet state is published for workers' `--control`. Default `tcp://*:5556`.
    public var publish = "tcp://*:5556"
    /// Where `drover exit` and `drover status` reach the controller. Default `tcp://*:5557`.
    public var bind = "tcp://*:5557"
    /// How often the state is republished (PUB/SUB drops messages to late joiners, so a state
    /// is repeated, not sent once). Default 1000 ms.
    public var heartbeatMilliseconds: Int32 = 1000
    /// Extra time past an exit's deadline before the controller gives up on silent workers:
    /// three heartbeat intervals, the broker's liveness window. Default 5000 ms.
    public var exitGraceMilliseconds: Int64 = 5000
    /// A file to write the bound endpoints to once listening (publish, then command).
    public var readyFile: String? = nil
    /// Who may connect to its publisher and command endpoint, and what each key may do.
    /// Default: no keys, loopback peers only.
    public var security = ServerSecurity.loopbackOnly
    /// Its keys towards a broker that uses them: its own certificate (role controller) and
    /// the broker's public key.
    public var brokerSecurity: ClientSecurity? = nil

    public init(broker: String) {
        self.broker = broker
    }
}

/// The controller: owns the fleet state ("running" or "exiting", with an epoch), publishes it,
/// tells the broker, and reports a coordinated exit to `drover exit` as workers leave.
///
/// Threads: ``run()`` owns all three sockets on the calling thread; ``stop()`` is thread-safe.
public final class Controller: Sendable {
    public let options: ControllerOptions
    private let logger: Logger
    private let context: ZMQContext
    private let wakeup = Wakeup()
    private let stopping = Atomic<Bool>(false)

    /// How often broker status is polled while an exit is being watched.
    static let statusPollMilliseconds: Int64 = 200
    /// How long a stopping controller keeps going to finish reporting an exit.
    static let finalReportMilliseconds: Int64 = 2000
    /// How often a refused handshake with the broker is logged.
    static let refusalLogMilliseconds: Int64 = 5000
    /// How long a stopping controller keeps its sockets open after a final exit report.
    static let finalFlushMilliseconds: Int64 = 300
    /// A broker that has not answered a status request for this long fails the exit being watched.
    static let brokerSilenceMilliseconds: Int64 = 5000

    private let ownsContext: Bool

    /// A controller with a context of its own, terminated when ``run()`` returns so that its
    /// last report reaches `drover exit` before the process ends.
    public convenience init(options: ControllerOptions, logger: Logger) {
        self.init(options: options, context: ZMQContext(), ownsContext: true, logger: logger)
    }

    /// A controller on a shared context, which the caller terminates.
    public convenience init(options: ControllerOptions, context: ZMQContext, logger: Logger) {
        self.init(options: options, context: context, ownsContext: false, logger: logger)
    }

    private init(options: ControllerOptions, context: ZMQContext, ownsContext: Bool, logger: Logger) {
        self.options = options
        self.context = context
        self.ownsContext = ownsContext
        self.logger = logger
    }

    public func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
    }

    public func run() throws {
        for (flag, endpoint, binding) in [("--broker", options.broker, false), ("--publish", options.publish, true), ("--bind", options.bind, true)] {
            if let problem = Endpoint.problem(endpoint, binding: binding) { throw DroverError.badOption("\(flag): \(problem)") }
        }
        // The ZAP handler first: the sockets refuse everyone until it is bound.
        let serverGuard = try ServerGuard(options.security, context: context, logger: logger)
        defer { serverGuard.stop() }
        let publisher = try ZMQSocket(context, type: .pub, linger: 0)
        try options.security.configure(publisher)
        try publisher.set(.maxMessageSize(bytes: 4096))  // it receives only subscriptions
        // A bounded linger lets the last exit report reach `drover exit` as the controller stops.
        let commands = try ZMQSocket(context, type: .router, linger: 1000)
        try options.security.configure(commands)
        try commands.set(.routerMandatory(true))
        try commands.set(.maxMessageSize(bytes: 4096))
        for (socket, endpoint) in [(publisher, options.publish), (commands, options.bind)] {
            do { try socket.bind(endpoint) } catch { throw DroverError.cannotBind(endpoint, error.reason) }
        }
        let broker = try ZMQSocket(context, type: .dealer, linger: 0)
        let monitor = try broker.monitor(.handshakes)
        var handshakes = HandshakeWatch(server: "the broker", serverFlag: "--broker-key", usesKeys: options.brokerSecurity != nil)
        var redial = Redial()
        var lastRefusalLogged: Int64 = -Self.refusalLogMilliseconds
        try options.brokerSecurity.configure(broker)
        try broker.set(.immediate(true))
        try broker.set(.reconnectIntervalMax(milliseconds: 2000))
        try broker.set(.maxMessageSize(bytes: 16 << 20))
        try broker.connect(options.broker)

        let endpoints = [try publisher.lastEndpoint(), try commands.lastEndpoint()]
        logger.info("controller listening", metadata: ["publish": "\(endpoints[0])", "commands": "\(endpoints[1])", "broker": "\(options.broker)"])
        options.security.logMode(logger, anyone: "anyone who can reach \(options.bind) may make the whole fleet exit")
        if let path = options.readyFile { try writeReadyFile(path, lines: endpoints) }

        var loop = ControllerLoop(options: options, logger: logger, publisher: publisher, commands: commands, broker: broker)
        var poller = ZMQPoller()
        let commandIndex = poller.add(commands)
        let brokerIndex = poller.add(broker)
        let wakeIndex = poller.add(fileDescriptor: wakeup.fileDescriptor)
        let monitorIndex = poller.add(monitor)
        loop.announce(now: monotonicMilliseconds())
        var stopRequestedAt: Int64? = nil
        while true {
            if stopRequestedAt == nil && stopping.load(ordering: .acquiring) { stopRequestedAt = monotonicMilliseconds() }
            // An exit being watched gets its final report before the controller goes, if the
            // broker can give one soon: `drover up` stops the controller right after the workers.
            // A report sent just now gets a moment to leave: a message queued right before its
            // socket closes was seen lost, linger or not (`drover exit` then waited in vain).
            if let since = stopRequestedAt {
                let now = monotonicMilliseconds()
                let reportLeaving = loop.lastFinalReportAt.map { now - $0 < Self.finalFlushMilliseconds } ?? false
                if (loop.watches.isEmpty && !reportLeaving) || now - since > Self.finalReportMilliseconds { break }
            }
            let ready = try poller.poll(timeout: 50)
            let now = monotonicMilliseconds()
            if ready[wakeIndex] { wakeup.clear() }
            if ready[commandIndex] {
                if options.security.usesKeys {
                    while let (frames, userID) = try commands.receive(dontWait: true, property: "User-Id") {
                        loop.command(frames, now: now, role: options.security.role(ofUserID: userID))
                    }
                } else {
                    while let frames = try commands.receive(dontWait: true) { loop.command(frames, now: now) }
                }
            }
            if ready[brokerIndex] { while let frames = try broker.receive(dontWait: true) { loop.fromBroker(frames, now: now) } }
            if ready[monitorIndex] {
                while let event = try monitor.receiveMonitorEvent(dontWait: true) {
                    _ = handshakes.note(event)
                    redial.note(event, now: now)
                    if event.kind != .handshakeSucceeded, let failure = handshakes.lastFailure, now - lastRefusalLogged >= Self.refusalLogMilliseconds {
                        lastRefusalLogged = now
                        logger.error("cannot reach the broker: \(failure); still trying", metadata: ["broker": "\(options.broker)"])
                    }
                }
            }
            redial.redialIfDue(broker, endpoint: options.broker, now: now)
            loop.timers(now: now)
        }
        logger.info("controller stopping")
        publisher.close()
        commands.close()
        broker.stopMonitor()
        monitor.close()
        broker.close()
        serverGuard.stop()
        if ownsContext { context.terminate() }
    }
}

/// The controller's sockets and state, on ``Controller/run()``'s thread.
struct ControllerLoop {
    /// A `drover exit` waiting to hear how the exit goes.
    struct Watch {
        var peer: PeerID
        var startedAt: Int64
        var giveUpAt: Int64
        var reported: Set<String> = []
        var confirmed = 0
        var unconfirmed: [String] = []
        /// Workers that confirmed, but only after their deadline made them hand running items back.
        var pastDeadline: [String] = []
    }

    let options: ControllerOptions
    let logger: Logger
    let publisher: ZMQSocket
    let commands: ZMQSocket
    let broker: ZMQSocket
    /// The epoch starts at wall-clock milliseconds, so a restarted controller's state is newer.
    var fleet = FleetState(epoch: wallClockMilliseconds(), phase: .running, deadlineMilliseconds: 0)
    var watches: [Watch] = []
    var lastAnnounce: Int64 = 0
    var lastStatusRequest: Int64 = 0
    var lastStatusReply: Int64 = 0
    var lastWaitingEvent: Int64 = 0
    var brokerStatus: String? = nil
    var malformed = MalformedMessages()
    /// When an exit's final report last went out.
    var lastFinalReportAt: Int64? = nil

    init(options: ControllerOptions, logger: Logger, publisher: ZMQSocket, commands: ZMQSocket, broker: ZMQSocket) {
        self.options = options
        self.logger = logger
        self.publisher = publisher
        self.commands = commands
        self.broker = broker
    }

    /// Publishes the state and (re)introduces the controller to the broker with it. Repeated
    /// every interval, so late subscribers and a restarted broker both learn it.
    mutating func announce(now: Int64) {
        lastAnnounce = now
        _ = try? publisher.send(Codec.encode(.fleet(fleet)), dontWait: true)
        _ = try? broker.send(Codec.encode(.hello(Hello(role: .controller, name: defaultPeerName()))), dontWait: true)
        _ = try? broker.send(Codec.encode(.fleet(fleet)), dontWait: true)
    }

    /// A request from a client; `role` is its key's when the controller uses keys (nil then
    /// means the key was revoked).
    mutating func command(_ frames: [Frame], now: Int64, role: Certificate.Role?? = .none) {
        guard frames.count >= 2 else { return }
        let peer = frames[0]
        let decoded = malformed.decodeOrError(frames[1...], from: "a client", logger: logger)
        if case .some(let keyRole) = role, case .success(let message) = decoded {
            let refusal = keyRole.map { Access.controllerRefusal($0, message) }
                ?? "this key is no longer authorized (it was removed from the controller's --authorized-keys)"
            if let refusal {
                logger.warning("refused a request", metadata: ["command": "\(message.command)", "reason": "\(refusal)"])
                reply(peer, .error(.notAllowed, refusal))
                return
            }
        }
        switch decoded {
        case .success(.exitRequest(let deadline)):
            if fleet.phase == .running {
                fleet = FleetState(epoch: max(wallClockMilliseconds(), fleet.epoch + 1), phase: .exiting, deadlineMilliseconds: deadline)
                logger.notice("fleet exit requested", metadata: ["epoch": "\(fleet.epoch)", "deadline-ms": "\(deadline)"])
            }
            announce(now: now)
            let giveUp = now + Int64(fleet.deadlineMilliseconds) + options.exitGraceMilliseconds
            watches.append(Watch(peer: peer, startedAt: now, giveUpAt: giveUp))
            reply(peer, .exitProgress(json(["event": "exit-published", "epoch": "\(fleet.epoch)",
                                            "deadline-ms": "\(fleet.deadlineMilliseconds)"])))
            lastStatusReply = now  // the broker's silence is measured from here
            requestStatus(now: now)
        case .success(.statusRequest):
            reply(peer, .statusReply(brokerStatus ?? "{}"))
        case .success(let other):
            reply(peer, .error(.notAllowed, "the controller does not accept \(other.command) messages"))
        case .failure(let error):
            reply(peer, .error(error.wireCode, error.detail))
        }
    }

    mutating func fromBroker(_ frames: [Frame], now: Int64) {
        guard case .statusReply(let text)? = malformed.decode(frames, from: "the broker", logger: logger) else { return }
        lastStatusReply = now
        brokerStatus = text
        guard !watches.isEmpty, let status = try? JSONDecoder().decode(BrokerStatus.self, from: Data(text.utf8)) else { return }
        var finished: [Int] = []
        for index in watches.indices {
            var watch = watches[index]
            let sinceStart = now - watch.startedAt
            for gone in status.departed where gone.ago <= sinceStart && !watch.reported.contains(gone.name) {
                watch.reported.insert(gone.name)
                if gone.how != "bye" {
                    watch.unconfirmed.append(gone.name)
                } else if gone.byeCode != ByeCode.drained.rawValue {
                    // It left without finishing its items: past the deadline, or stopped at once.
                    watch.pastDeadline.append(gone.name)
                } else {
                    watch.confirmed += 1
                }
                reply(watch.peer, .exitProgress(json([
                    "event": "worker-exited", "worker": gone.name, "how": gone.how, "reason": gone.reason,
                    "completed": "\(gone.completed)", "handed-back": "\(gone.itemsReturned)"])))
            }
            if status.workers.isEmpty {
                let ok = watch.unconfirmed.isEmpty && watch.pastDeadline.isEmpty
                lastFinalReportAt = now
                reply(watch.peer, .exitFinished(succeeded: ok, json([
                    "confirmed": "\(watch.confirmed)", "unconfirmed": watch.unconfirmed.joined(separator: ","),
                    "past-deadline": watch.pastDeadline.joined(separator: ","),
                    "queued": "\(status.queues.reduce(0) { $0 + $1.queued })"])))
                finished.append(index)
            } else if now >= watch.giveUpAt {
                lastFinalReportAt = now
                reply(watch.peer, .exitFinished(succeeded: false, json([
                    "confirmed": "\(watch.confirmed)", "remaining": status.workers.map(\.name).joined(separator: ","),
                    "unconfirmed": watch.unconfirmed.joined(separator: ","),
                    "past-deadline": watch.pastDeadline.joined(separator: ",")])))
                finished.append(index)
            }
            watches[index] = watch
        }
        for index in finished.reversed() { watches.remove(at: index) }
    }

    mutating func timers(now: Int64) {
        if now - lastAnnounce >= Int64(options.heartbeatMilliseconds) {
            announce(now: now)
            // The status `drover status --controller` relays is at most a heartbeat old.
            if watches.isEmpty { requestStatus(now: now) }
        }
        guard !watches.isEmpty else { return }
        if now - lastStatusReply > Controller.brokerSilenceMilliseconds {
            for watch in watches {
                lastFinalReportAt = now
                reply(watch.peer, .exitFinished(succeeded: false, json([
                    "error": "the broker at \(options.broker) has not answered for \(Controller.brokerSilenceMilliseconds / 1000) s",
                    "confirmed": "\(watch.confirmed)"])))
            }
            watches.removeAll()
        } else if now - lastStatusRequest >= Controller.statusPollMilliseconds {
            requestStatus(now: now)
        }
        // Tells each `drover exit` that the controller is alive, so it can tell silence from waiting.
        if now - lastWaitingEvent >= Int64(options.heartbeatMilliseconds) {
            lastWaitingEvent = now
            for watch in watches { reply(watch.peer, .exitProgress(json(["event": "waiting"]))) }
        }
    }

    mutating func requestStatus(now: Int64) {
        lastStatusRequest = now
        _ = try? broker.send(Codec.encode(.statusRequest), dontWait: true)
    }

    func reply(_ peer: PeerID, _ message: DroverMessage) {
        // The asker may have gone (Ctrl-C on `drover exit`): that is not the controller's problem.
        _ = try? commands.send([peer] + Codec.encode(message), dontWait: true)
    }

    func json(_ fields: [String: String]) -> String { jsonText(fields) }
}
