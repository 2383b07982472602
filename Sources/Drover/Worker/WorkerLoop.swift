import DroverPool
import DroverProtocol
import Glibc
import Logging
import ZeroMQ

/// The worker's I/O thread state. Lives on ``Worker/run()``'s thread with the sockets it uses.
struct WorkerLoop {
    /// Where the worker is in its life. Registration with the broker is tracked apart
    /// (`registered`), since a worker may lose and regain the broker in any phase.
    enum Phase {
        /// Granting credit and running items.
        case serving
        /// No new work; running items finish until `deadline` (monotonic ms).
        case draining(deadline: Int64, reason: String)
        /// Done with work; saying goodbye. `byeSentAt` is nil while the broker is unreachable
        /// (the goodbye goes when it is back); the worker gives up waiting at `giveUpAt`.
        case leaving(exit: WorkerExit, reason: String, byeSentAt: Int64?, giveUpAt: Int64)
    }

    let worker: Worker
    let broker: ZMQSocket
    let control: ZMQSocket?
    let pool: HandlerPool<HeldJob>
    var logger: Logger { worker.logger }
    var options: WorkerOptions { worker.options }

    var phase = Phase.serving
    var registered = false
    var wroteReadyFile = false
    var malformed = MalformedMessages()
    /// Deliveries handed to the pool and not yet finished.
    var inPool: HeldItems
    /// Outcomes the broker has not taken yet (it was unreachable when they finished).
    var unsentOutcomes: [ItemOutcome] = []
    /// Slots freed since the broker last heard of our credit: sent with the next `done`.
    var creditOwed = 0
    /// Deliveries handed back while the broker was unreachable, to tell it when it is back.
    var unsentHandBack: [DeliveryRef] = []
    var fleetEpoch: UInt64 = 0
    var lastSent: Int64 = 0
    var lastHeard: Int64 = 0
    var lastHello: Int64 = 0
    /// Whether the last `hello` went out and has not been answered yet. Only the first
    /// `welcome` after a `hello` grants credit: a second one (two hellos crossed in flight)
    /// would otherwise double the credit.
    var helloOutstanding = false
    var lastLoop: Int64 = 0
    var lastTouched: Int64 = 0
    var lastWarned: Int64 = 0
    let startedAt = monotonicMilliseconds()

    var heartbeat: Int64 { Int64(options.heartbeatMilliseconds) }
    var liveness: Int64 { heartbeat * Int64(options.liveness) }
    /// How often `hello` is offered while unregistered and not yet connected. With ZMQ_IMMEDIATE
    /// an offer made before the TCP connection is up is refused locally (nothing goes on the
    /// wire), so this only bounds how soon after connecting the worker registers.
    static let helloRetryMilliseconds: Int64 = 100
    /// How long a `hello` that did go out waits for its `welcome` before another is sent.
    static let helloAnswerMilliseconds: Int64 = 1000
    /// The longest a finished item's outcome waits in the mailbox while handler threads batch.
    static let outcomeWaitMilliseconds = 1
    /// Warn about an unreachable broker this often.
    static let warnEveryMilliseconds: Int64 = 5000
    /// The goodbye reason of a worker whose drain deadline passed; the controller reports it.
    static let deadlineByeReason = "drain deadline passed"
    /// How long a leaving worker waits for an unreachable broker to come back, so that its
    /// outcomes and goodbye are delivered rather than redelivered elsewhere.
    static let goodbyeWaitMilliseconds: Int64 = 30_000

    init(worker: Worker, broker: ZMQSocket, control: ZMQSocket?, pool: HandlerPool<HeldJob>) {
        self.worker = worker
        self.broker = broker
        self.control = control
        self.pool = pool
        inPool = HeldItems(capacity: worker.options.capacity)
    }

    mutating func run() throws -> WorkerExit {
        var poller = ZMQPoller()
        let brokerIndex = poller.add(broker)
        let controlIndex = control.map { poller.add($0) }
        let wakeIndex = poller.add(fileDescriptor: worker.wakeup.fileDescriptor)
        sayHello(now: monotonicMilliseconds())

        while true {
            // Handler threads may hold back outcomes while this worker has items, if its outcome
            // batch is larger than one (see `Worker.run`); then looking every millisecond bounds
            // how long one can wait. With a batch of one (fewer than 16 slots, the default) every
            // outcome wakes this thread itself, so a worker running long items sleeps instead.
            // (Asking the pool whether jobs are queued would be exact, but its lock on every turn
            // measured about 9 % slower.)
            let mayHoldBack = options.outcomeBatch > 1 && !inPool.isEmpty
            let ready = try poller.poll(timeout: mayHoldBack ? Self.outcomeWaitMilliseconds : 100)
            let now = monotonicMilliseconds()
            if lastLoop > 0, now - lastLoop > liveness, registered {
                // This process was paused (SIGSTOP, a VM freeze) past the liveness window: the
                // broker has given up on us and closed the connection, so anything sent now would
                // be lost. Register again first; outcomes wait for the new registration.
                logger.warning("this worker was paused past the liveness window; registering again", metadata: ["paused-ms": "\(now - lastLoop)"])
                registered = false
                sayHello(now: now)
            }
            lastLoop = now
            if ready[wakeIndex] { worker.wakeup.clear() }
            let box = worker.mailbox.withLock { box in
                defer { box.outcomes.removeAll(keepingCapacity: true) }
                return box
            }
            if box.stopRequested {
                // Saying goodbye without waiting lets the broker redeliver at once.
                _ = send(.bye("stopped at once"), now: now)
                worker.handler.cancelRunning()
                logger.warning("worker stopping at once; the broker redelivers its items", metadata: ["items": "\(inPool.count)"])
                return .stopped
            }
            if !box.outcomes.isEmpty { finished(box.outcomes, now: now) }
            if let reason = box.drainRequested { beginDrain(reason: reason, deadline: options.drainDeadlineMilliseconds, now: now) }
            if ready[brokerIndex] {
                while let frames = try broker.receive(dontWait: true) {
                    if let exit = handleBroker(frames, now: now) { return exit }
                }
            }
            if let controlIndex, ready[controlIndex], let control {
                while let frames = try control.receive(dontWait: true) {
                    switch malformed.decode(frames, from: "the controller", logger: logger) {
                    case .fleet(let state)?: applyFleet(state, from: "controller", now: now)
                    case let other?: logger.warning("ignored an unexpected message from the controller", metadata: ["command": "\(other.command)"])
                    case nil: break
                    }
                }
            }
            if let exit = timers(now: monotonicMilliseconds()) { return exit }
        }
    }

    // MARK: Messages from the broker

    mutating func handleBroker(_ frames: [Frame], now: Int64) -> WorkerExit? {
        lastHeard = now
        guard let message = malformed.decode(frames, from: "the broker", logger: logger) else { return nil }
        switch message {
        case .welcome(let welcome):
            let grants = helloOutstanding
            helloOutstanding = false
            registered = true
            worker.maxResultBytes.store(Int(welcome.maxItemBytes), ordering: .relaxed)
            logger.info("registered with the broker", metadata: ["broker": "\(options.broker)", "queue": "\(options.queue)", "threads": "\(options.threads)"])
            if !wroteReadyFile, let path = options.readyFile {
                wroteReadyFile = true
                try? writeReadyFile(path, lines: [options.name])
            }
            // A registration starts with no credit: the grant below covers every free slot,
            // including those freed by outcomes the broker has not heard of yet.
            if grants { creditOwed = 0 }
            if !unsentOutcomes.isEmpty {
                let outcomes = unsentOutcomes
                unsentOutcomes.removeAll()
                report(outcomes, now: now)
            }
            switch phase {
            case .serving:
                let free = options.capacity - inPool.count
                if grants && free > 0 { _ = send(.credit(UInt32(free)), now: now) }
            case .draining:
                handBack(unsentHandBack, now: now)  // also tells this broker we take no more work
            case .leaving(let exit, let reason, _, let giveUpAt):
                handBack(unsentHandBack, now: now)
                phase = .leaving(exit: exit, reason: reason, byeSentAt: send(.bye(reason), now: now) ? now : nil, giveUpAt: giveUpAt)
            }
            applyFleet(welcome.fleet, from: "broker", now: now)
        case .deliver(let deliveries):
            var jobs: [HeldJob] = []
            if case .serving = phase {
                jobs.reserveCapacity(deliveries.count)
                for d in deliveries {
                    guard let slot = inPool.hold(d) else { break }
                    jobs.append(HeldJob(slot: slot, delivery: d))
                }
                let taken = pool.submit(contentsOf: jobs)
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
        case .fleet(let state):
            applyFleet(state, from: "broker", now: now)
        case .heartbeat:
            break
        case .bye:
            if case .leaving(let exit, _, _, _) = phase { return exit }
        case .error(let code, let text):
            if code == .unknownPeer {
                logger.warning("the broker does not know this worker (restarted?); registering again")
                registered = false
                sayHello(now: now)
            } else {
                logger.error("the broker refused a message", metadata: ["code": "\(code)", "reason": "\(text)"])
            }
        case .hello, .submit, .accepted, .rejected, .result, .credit, .done, .handBack,
             .statusRequest, .statusReply, .exitRequest, .exitProgress, .exitFinished, .deadLetters, .deadLetterReply:
            logger.warning("ignored an unexpected message from the broker", metadata: ["command": "\(message.command)"])
        }
        return nil
    }

    // MARK: Work

    /// Items finished on the handler threads: their slots are free again.
    mutating func finished(_ jobs: [FinishedJob], now: Int64) {
        var outcomes: [ItemOutcome] = []
        outcomes.reserveCapacity(jobs.count)
        for job in jobs {
            inPool.release(job.slot, id: job.outcome.id, attempt: job.outcome.attempt)
            outcomes.append(job.outcome)
        }
        if case .serving = phase { creditOwed += outcomes.count }
        report(outcomes, now: now)
    }

    /// Sends outcomes, with the credit owed, or keeps them for when the broker is back.
    mutating func report(_ outcomes: [ItemOutcome], now: Int64) {
        let credit = UInt32(creditOwed)
        if registered && send(.done(credit: credit, outcomes), now: now) {
            creditOwed = 0
        } else {
            unsentOutcomes += outcomes
        }
    }

    mutating func applyFleet(_ state: FleetState, from source: String, now: Int64) {
        guard state.epoch > fleetEpoch else { return }
        fleetEpoch = state.epoch
        if state.phase == .exiting {
            beginDrain(reason: "fleet exit (epoch \(state.epoch), from the \(source))", deadline: state.deadlineMilliseconds, now: now)
        }
    }

    mutating func beginDrain(reason: String, deadline: UInt32, now: Int64) {
        guard case .serving = phase else { return }
        let unstarted = pool.takeUnstarted()
        for job in unstarted { inPool.release(job.slot, id: job.delivery.id, attempt: job.delivery.attempt) }
        phase = .draining(deadline: now + Int64(deadline), reason: reason)
        logger.notice("draining", metadata: ["reason": "\(reason)", "handing-back": "\(unstarted.count)",
                                             "running": "\(inPool.count)", "deadline-ms": "\(deadline)"])
        handBack(unstarted.map { DeliveryRef(id: $0.delivery.id, attempt: $0.delivery.attempt) }, now: now)
    }

    /// Hands deliveries back now, or when the broker is reachable again.
    mutating func handBack(_ refs: [DeliveryRef], now: Int64) {
        if registered && send(.handBack(refs), now: now) {
            unsentHandBack.removeAll()
        } else {
            unsentHandBack = refs
        }
    }

    // MARK: Timers

    mutating func timers(now: Int64) -> WorkerExit? {
        if wroteReadyFile, let path = options.readyFile, now - lastTouched >= heartbeat {
            lastTouched = now
            _ = utimes(path, nil)  // "this I/O thread is alive", for liveness probes
        }
        if !registered {
            let wait = helloOutstanding ? Self.helloAnswerMilliseconds : Self.helloRetryMilliseconds
            if now - lastHello >= wait { sayHello(now: now) }
            if now - startedAt >= 3000, now - lastWarned >= Self.warnEveryMilliseconds {
                lastWarned = now
                logger.warning("cannot reach the broker; still trying", metadata: ["broker": "\(options.broker)"])
            }
        } else if now - lastHeard > liveness {
            logger.warning("the broker has been silent past the liveness window; registering again",
                           metadata: ["silent-ms": "\(now - lastHeard)"])
            registered = false
            sayHello(now: now)
        } else if now - lastSent >= heartbeat {
            _ = send(.heartbeat, now: now)
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
                worker.handler.cancelRunning()
                inPool.removeAll()
                handBack(unsentHandBack + abandoned, now: now)
                leave(.deadlinePassed(abandoned: abandoned.count), byeReason: Self.deadlineByeReason, now: now)
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

    mutating func leave(_ exit: WorkerExit, byeReason: String, now: Int64) {
        let sent = registered && unsentOutcomes.isEmpty && unsentHandBack.isEmpty && send(.bye(byeReason), now: now)
        if !sent { logger.notice("waiting for the broker to come back to say goodbye", metadata: ["broker": "\(options.broker)"]) }
        phase = .leaving(exit: exit, reason: byeReason, byeSentAt: sent ? now : nil,
                         giveUpAt: now + Self.goodbyeWaitMilliseconds)
    }

    mutating func sayHello(now: Int64) {
        lastHello = now
        let hello = Hello(role: .worker, name: options.name, queue: options.queue, concurrency: UInt32(options.threads))
        helloOutstanding = send(.hello(hello), now: now) || helloOutstanding
    }

    /// Sends without blocking; `false` when the broker is not connected or its pipe is full.
    mutating func send(_ message: DroverMessage, now: Int64) -> Bool {
        do {
            let sent = try broker.send(Codec.encode(message), dontWait: true)
            if sent { lastSent = now }
            return sent
        } catch {
            logger.error("send to the broker failed", metadata: ["error": "\(error)"])
            return false
        }
    }
}
