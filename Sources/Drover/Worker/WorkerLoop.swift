import DroverPool
import DroverProtocol
import Glibc
import Logging
import ZeroMQ

/// The worker's I/O thread: owns the sockets, polls them with the handler threads' wake-up,
/// and feeds what arrives to the ``WorkerSession``, which decides everything. Lives on
/// ``Worker/run()``'s thread.
struct WorkerLoop {
    let worker: Worker
    let broker: ZMQSocket
    let control: ZMQSocket?
    /// The broker connection's handshakes: a refused key is logged as such, not as silence.
    let monitor: ZMQSocket
    var handshakes: HandshakeWatch
    var redial = Redial()
    var session: WorkerSession<WorkerIO>
    var malformed = MalformedMessages()
    var lastTouched: Int64 = 0
    var lastHealthCheck: Int64 = 0
    /// How often the handler's health is looked at (a lock, for `--serve`), and sent on change.
    static let healthCheckMilliseconds: Int64 = 200
    var logger: Logger { worker.logger }
    var options: WorkerOptions { worker.options }

    /// The longest a finished item's outcome waits in the mailbox while handler threads batch.
    static let outcomeWaitMilliseconds = 1

    init(worker: Worker, broker: ZMQSocket, control: ZMQSocket?, monitor: ZMQSocket, pool: HandlerPool<HeldJob>) {
        self.worker = worker
        self.broker = broker
        self.control = control
        self.monitor = monitor
        handshakes = HandshakeWatch(server: "the broker", serverFlag: "--broker-key", usesKeys: worker.options.security != nil)
        session = WorkerSession(options: worker.options, ports: WorkerIO(worker: worker, broker: broker, pool: pool),
                                logger: worker.logger, now: monotonicMilliseconds())
    }

    mutating func run() throws -> WorkerExit {
        var poller = ZMQPoller()
        let brokerIndex = poller.add(broker)
        let controlIndex = control.map { poller.add($0) }
        let wakeIndex = poller.add(fileDescriptor: worker.wakeup.fileDescriptor)
        let monitorIndex = poller.add(monitor)
        session.start(now: monotonicMilliseconds())

        while true {
            // Handler threads may hold back outcomes while this worker has items, if its outcome
            // batch is larger than one (see `Worker.run`); then looking every millisecond bounds
            // how long one can wait. With a batch of one (fewer than 16 slots, the default) every
            // outcome wakes this thread itself, so a worker running long items sleeps instead.
            // (Asking the pool whether jobs are queued would be exact, but its lock on every turn
            // measured about 9 % slower.)
            let mayHoldBack = worker.outcomeBatch.load(ordering: .relaxed) > 1 && !session.inPool.isEmpty
            let ready = try poller.poll(timeout: mayHoldBack ? Self.outcomeWaitMilliseconds : 100)
            let now = monotonicMilliseconds()
            session.turn(now: now)
            if ready[wakeIndex] { worker.wakeup.clear() }
            let box = worker.mailbox.withLock { box in
                defer { box.outcomes.removeAll(keepingCapacity: true) }
                return box
            }
            if box.stopRequested { return session.stopNow(now: now) }
            if !box.outcomes.isEmpty { session.finished(box.outcomes, now: now) }
            if let reason = box.drainRequested { session.drain(reason: reason, deadline: options.drainDeadlineMilliseconds, now: now) }
            if ready[brokerIndex] {
                while let frames = try broker.receive(dontWait: true) {
                    guard let message = malformed.decode(frames, from: "the broker", logger: logger) else { continue }
                    if let exit = session.received(message, now: now) { return exit }
                }
            }
            if ready[monitorIndex] { try noteHandshakes(now: now) }
            if let controlIndex, ready[controlIndex], let control {
                while let frames = try control.receive(dontWait: true) {
                    if let message = malformed.decode(frames, from: "the controller", logger: logger) {
                        session.receivedFromController(message, now: now)
                    }
                }
            }
            let later = monotonicMilliseconds()
            redial.redialIfDue(broker, endpoint: options.broker, now: later)
            touchReadyFile(now: later)
            if later - lastHealthCheck >= Self.healthCheckMilliseconds {
                lastHealthCheck = later
                session.handler(worker.handler.health, now: later)
            }
            if let exit = session.timers(now: later) { return exit }
        }
    }

    /// Notes the handshakes with the broker: a failure is logged when it first happens (or
    /// changes), and then said in the session's periodic "cannot reach the broker" warning. The
    /// worker keeps trying, since its key may yet be authorized (the broker reads its keys again
    /// on SIGHUP).
    mutating func noteHandshakes(now: Int64) throws {
        while let event = try monitor.receiveMonitorEvent(dontWait: true) {
            let before = handshakes.lastFailure
            _ = handshakes.note(event)
            redial.note(event, now: now)
            session.connectionProblem = handshakes.lastFailure
            if let failure = handshakes.lastFailure, failure != before {
                logger.error("cannot register: \(failure); still trying", metadata: ["broker": "\(options.broker)"])
            }
        }
    }

    /// Refreshes the ready file's time every heartbeat once it exists: "this I/O thread is
    /// alive", for liveness probes, whether or not the broker is reachable.
    mutating func touchReadyFile(now: Int64) {
        guard session.ports.wroteReadyFile, let path = options.readyFile, now - lastTouched >= session.heartbeat else { return }
        lastTouched = now
        _ = utimes(path, nil)
    }
}

/// The worker session's ports over the real broker socket, handler pool and handler.
struct WorkerIO: WorkerPorts {
    let worker: Worker
    let broker: ZMQSocket
    let pool: HandlerPool<HeldJob>
    private(set) var wroteReadyFile = false

    init(worker: Worker, broker: ZMQSocket, pool: HandlerPool<HeldJob>) {
        self.worker = worker
        self.broker = broker
        self.pool = pool
    }

    mutating func send(_ message: DroverMessage) -> Bool {
        do {
            return try broker.send(Codec.encode(message), dontWait: true)
        } catch {
            worker.logger.error("send to the broker failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    mutating func run(_ jobs: [HeldJob]) -> Int { pool.submit(contentsOf: jobs) }

    mutating func takeUnstarted() -> [HeldJob] { pool.takeUnstarted() }

    mutating func cancelRunning() {
        worker.cancellation.cancel()
        worker.handler.cancelRunning()
    }

    var queuedInPool: Int { pool.queued }

    mutating func resized(capacity: Int) {
        worker.outcomeBatch.store(WorkerOptions.outcomeBatch(capacity: capacity), ordering: .relaxed)
    }

    mutating func welcomed(_ welcome: Welcome) {
        worker.maxResultBytes.store(Int(welcome.maxItemBytes), ordering: .relaxed)
        if !wroteReadyFile, let path = worker.options.readyFile {
            wroteReadyFile = true
            try? writeReadyFile(path, lines: [worker.options.name])
        }
    }
}
