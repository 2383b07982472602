import DroverDispatch
import DroverProtocol
import Logging
import ZeroMQ

/// The broker's per-thread state: the socket, the dispatcher and the outbox. Lives on `run()`'s thread.
struct BrokerLoop {
    let options: BrokerOptions
    let socket: ZMQSocket
    let logger: Logger
    var dispatcher: Dispatcher
    /// Messages that met a full pipe (`EAGAIN`), retried on the next turn.
    var backlog: [Outgoing] = []
    var malformed = MalformedMessages()

    init(options: BrokerOptions, socket: ZMQSocket, logger: Logger) {
        self.options = options
        self.socket = socket
        self.logger = logger
        self.dispatcher = Dispatcher(limits: options.dispatcherLimits)
    }

    mutating func receiveAvailable() throws {
        for _ in 0..<BrokerOptions.receiveBatch {
            guard let frames = try socket.receive(dontWait: true) else { return }
            handle(frames, now: monotonicMilliseconds())
        }
    }

    mutating func handle(_ frames: [Frame], now: Int64) {
        guard frames.count >= 2 else { return }  // a ROUTER always prepends the identity
        let peer = frames[0]
        let message: DroverMessage
        switch malformed.decodeOrError(frames[1...], from: "a peer", logger: logger) {
        case .success(let decoded): message = decoded
        case .failure(let error):
            send(peer, .error(error.wireCode, error.detail))
            return
        }
        // A hello resets the worker itself (credit included), so it is not a sign to resume.
        if message.command != .hello { dispatcher.seen(peer, now: now) }
        switch message {
        case .hello(let hello):
            let known = dispatcher.isWorker(peer)
            dispatcher.hello(from: peer, hello, now: now, heartbeatMilliseconds: UInt32(options.heartbeatMilliseconds))
            if hello.role == .worker {
                logger.info(known ? "worker registered again" : "worker joined", metadata: [
                    "worker": "\(hello.name)", "queue": "\(hello.queue)", "threads": "\(hello.concurrency)"])
            }
        case .heartbeat:
            // Only registered workers heartbeat; anyone else has been forgotten (a restart):
            // telling it so makes it say hello again at once, instead of after the liveness window.
            if !dispatcher.isWorker(peer) { dispatcher.unknownPeer(peer) }
        case .submit(let submit):
            dispatcher.submit(from: peer, submit, now: now)
        case .credit(let amount):
            dispatcher.credit(from: peer, amount)
        case .done(let credit, let outcomes):
            dispatcher.done(from: peer, credit: credit, outcomes, now: now)
        case .handlerState(let health):
            if let worker = dispatcher.handlerState(from: peer, health) {
                logger.warning("a worker's handler processes keep dying", metadata: [
                    "worker": "\(worker)", "deaths-in-a-row": "\(health.deathsInARow)", "problem": "\(health.problem)"])
            }
        case .handBack(let refs):
            dispatcher.handBack(from: peer, refs)
            if !refs.isEmpty { logger.info("worker handed items back", metadata: ["items": "\(refs.count)"]) }
        case .bye(let code, let reason):
            if let gone = dispatcher.bye(from: peer, code: code, reason: reason, now: now) {
                logger.info("worker left", metadata: ["worker": "\(gone.name)", "reason": "\(reason)",
                                                      "completed": "\(gone.completed)", "returned": "\(gone.itemsReturned)"])
            }
        case .fleet(let state):
            if dispatcher.fleetState(from: peer, state) {
                logger.notice("fleet state changed", metadata: ["state": "\(state)", "workers": "\(dispatcher.workerPeers.count)"])
            }
        case .statusRequest:
            let status = dispatcher.status(now: now)
            send(peer, .statusReply(jsonText(status)))
        case .deadLetters(let request):
            send(peer, .deadLetterReply(dispatcher.deadLetters(request, now: now)))
            switch request {
            case .replay, .purge: logger.notice("dead letters changed", metadata: ["request": "\(request)"])
            case .list, .show: break
            }
        case .welcome, .error, .accepted, .rejected, .result, .deliver, .statusReply, .exitRequest, .exitProgress,
             .exitFinished, .deadLetterReply:
            send(peer, .error(.notAllowed, "the broker does not accept \(message.command) messages"))
        }
    }

    mutating func tick(now: Int64) {
        for name in dispatcher.expireSilentWorkers(now: now) {
            logger.warning("worker silent past the liveness window; its items go back to the queue", metadata: ["worker": "\(name)"])
        }
        for peer in dispatcher.workerPeers { send(peer, .heartbeat) }
    }

    private mutating func send(_ peer: PeerID, _ message: DroverMessage) {
        backlog.append(Outgoing(peer: peer, message: message))
    }

    /// Sends everything the dispatcher produced, plus earlier messages that met a full pipe.
    mutating func flush() throws {
        var pending = backlog + dispatcher.takeOutbox()
        backlog.removeAll()
        while !pending.isEmpty {
            for out in pending { try sendNow(out) }
            pending = dispatcher.takeOutbox()
        }
    }

    private mutating func sendNow(_ out: Outgoing) throws {
        let frames = [out.peer] + Codec.encode(out.message)
        do {
            if try socket.send(frames, dontWait: true) { return }
            // The peer's pipe is full: keep the work, try again on the next turn.
            if case .deliver(let deliveries) = out.message {
                dispatcher.undelivered(to: out.peer, deliveries)
            } else {
                backlog.append(out)
            }
        } catch let error where error == .hostUnreachable {
            if case .deliver(let deliveries) = out.message { dispatcher.undelivered(to: out.peer, deliveries) }
            if dispatcher.unreachable(out.peer, now: monotonicMilliseconds()) {
                logger.warning("worker unreachable; its items go back to the queue")
            }
        }
    }
}
