import DequeModule
#if canImport(Glibc)
import Glibc
#endif
import DroverDispatch
import DroverJournal
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
    /// Messages refused for their key's role, or because their key was revoked.
    var refusedMessages = 0
    /// The ZAP handler guarding the socket (its refusals, for status).
    var serverGuard: ServerGuard?
    /// The socket's connections: handshakes that fail before authentication, and the count.
    var serverWatch: ServerWatch?
    private var refusalLog = RateLimitedLog()
    /// The journal's files, when the broker keeps one.
    let journal: JournalStore?
    /// Messages that tell a producer its items are safe (`accepted`, `result`) or that change
    /// the dead-letter store, each with the log position that must be synced before it goes.
    var waitingForSync: Deque<(position: UInt64, out: Outgoing)> = []
    /// The journal failed: nothing more can be made durable.
    var journalFailure: JournalError?
    /// The journal's disk had no room for the next segment: new items are refused until it does.
    var diskFull = false
    /// What recovery brought back, for status.
    var recovered = (items: 0, seconds: 0.0)
    /// Journal figures at the last heartbeat tick, for the rates in status.
    private var lastTick: (stats: JournalStats, at: Int64)?
    private var journalRates = (syncsPerSecond: 0.0, itemsPerSync: 0.0)

    init(options: BrokerOptions, socket: ZMQSocket, logger: Logger, dispatcher: Dispatcher, journal: JournalStore?) {
        self.options = options
        self.socket = socket
        self.logger = logger
        self.dispatcher = dispatcher
        self.journal = journal
    }

    mutating func receiveAvailable() throws {
        let security = options.security
        for _ in 0..<BrokerOptions.receiveBatch {
            if security.usesKeys {
                // Every message carries the key its connection authenticated with: its role is
                // looked up now, so a key removed from --authorized-keys is refused at once.
                guard let (frames, userID) = try socket.receive(dontWait: true, property: "User-Id") else { return }
                handle(frames, now: monotonicMilliseconds(), sender: security.role(ofUserID: userID).map(Sender.key) ?? .revoked(userID ?? ""))
            } else {
                guard let frames = try socket.receive(dontWait: true) else { return }
                handle(frames, now: monotonicMilliseconds())
            }
        }
    }

    /// Who sent a message, as far as the broker can trust it.
    enum Sender {
        /// No keys: anyone the ZAP handler admitted (loopback, or everyone with --insecure).
        case anyone
        /// A key with this role.
        case key(Certificate.Role)
        /// A key no longer in --authorized-keys.
        case revoked(String)
    }

    mutating func handle(_ frames: [Frame], now: Int64, sender: Sender = .anyone) {
        guard frames.count >= 2 else { return }  // a ROUTER always prepends the identity
        let peer = frames[0]
        let message: DroverMessage
        switch malformed.decodeOrError(frames[1...], from: "a peer", logger: logger) {
        case .success(let decoded): message = decoded
        case .failure(let error):
            send(peer, .error(error.wireCode, error.detail))
            return
        }
        if let refusal = refusal(of: message, from: sender, now: now) {
            send(peer, .error(.notAllowed, refusal))
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
            var status = dispatcher.status(now: now)
            status.journal = journalStatus()
            status.bytesHeld = dispatcher.bytesHeld
            status.bytesInMemory = dispatcher.bytesInMemory
            status.memoryLimitBytes = options.memoryLimitBytes
            status.security = securityStatus()
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

    /// Why `message` is refused from `sender`, or nil; refusals are counted and logged
    /// (rate-limited).
    private mutating func refusal(of message: DroverMessage, from sender: Sender, now: Int64) -> String? {
        let reason: String, subject: String
        switch sender {
        case .anyone:
            return nil
        case .key(let role):
            guard let refused = Access.brokerRefusal(role, message) else { return nil }
            reason = refused
            subject = "\(role.rawValue) \(message.command)"
        case .revoked(let key):
            reason = "this key is no longer authorized (it was removed from the broker's --authorized-keys)"
            subject = key
        }
        refusedMessages += 1
        let (log, suppressed) = refusalLog.admit(subject, now: now)
        if log {
            logger.warning("refused a message", metadata: ["command": "\(message.command)", "reason": "\(reason)",
                                                           "refused-since-last-line": "\(suppressed)"])
        }
        return reason
    }

    /// The security part of `drover status`.
    func securityStatus() -> BrokerStatus.Security {
        let security = options.security
        return BrokerStatus.Security(mode: security.usesKeys ? "keys" : security.insecure ? "insecure" : "loopback",
                                     authorizedKeys: security.authorizedKeys?.count ?? 0,
                                     refusedHandshakes: (serverGuard?.refusedHandshakes ?? 0) + (serverWatch?.failedHandshakes ?? 0),
                                     refusedMessages: refusedMessages)
    }

    /// The journal's part of `drover status`.
    func journalStatus() -> BrokerStatus.Journal? {
        guard let journal, let log = dispatcher.journal else { return nil }
        let stats = journal.stats
        var status = BrokerStatus.Journal(
            directory: journal.directory, segments: log.segmentCount, bytesOnDisk: log.segmentCount * journal.segmentBytes,
            bytesWritten: stats.bytesWritten, syncs: stats.syncs, syncsPerSecond: journalRates.syncsPerSecond,
            itemsPerSync: journalRates.itemsPerSync > 0 ? journalRates.itemsPerSync : Double(stats.itemsSynced) / Double(max(stats.syncs, 1)),
            meanSyncMicroseconds: Double(stats.syncMicroseconds) / Double(max(stats.syncs, 1)), maxSyncMicroseconds: stats.maxSyncMicroseconds,
            recoveredItems: recovered.items, recoverySeconds: recovered.seconds)
        status.itemsSynced = stats.itemsSynced
        status.diskFull = diskFull
        status.spilledItems = dispatcher.spilledItems
        return status
    }

    mutating func tick(now: Int64) {
        if let journal {
            let stats = journal.stats
            if let last = lastTick, now > last.at {
                let syncs = stats.syncs - last.stats.syncs
                journalRates.syncsPerSecond = Double(syncs) * 1000 / Double(now - last.at)
                journalRates.itemsPerSync = syncs > 0 ? Double(stats.itemsSynced - last.stats.itemsSynced) / Double(syncs) : 0
            }
            lastTick = (stats, now)
            if diskFull { prepareNextSegment() }
        }
        for name in dispatcher.expireSilentWorkers(now: now) {
            logger.warning("worker silent past the liveness window; its items go back to the queue", metadata: ["worker": "\(name)"])
        }
        for peer in dispatcher.workerPeers { send(peer, .heartbeat) }
    }

    private mutating func send(_ peer: PeerID, _ message: DroverMessage) {
        backlog.append(Outgoing(peer: peer, message: message))
    }

    /// Writes what the dispatcher journaled, then sends everything it produced (plus earlier
    /// messages that met a full pipe). Records are written before the deliveries that follow
    /// them go out, so a crash of this process cannot lose a record of something it did.
    mutating func flush() throws {
        releaseSynced()
        var pending = backlog
        backlog.removeAll()
        repeat {
            writeJournal()
            pending += dispatcher.takeOutbox()
            let written = journal?.written ?? 0
            for out in pending {
                // After a failed write nothing more becomes durable: what waits, waits for good.
                if journal != nil && Self.waitsForSync(out.message)
                    && (journalFailure != nil || !waitingForSync.isEmpty || journal!.synced < written) {
                    waitingForSync.append((written, out))
                } else {
                    try sendNow(out)
                }
            }
            pending.removeAll()
        } while dispatcher.hasOutbox || (journalFailure == nil && dispatcher.journal?.hasPending == true)
    }

    /// Whether `message` may go only once what it speaks of is on disk.
    static func waitsForSync(_ message: DroverMessage) -> Bool {
        switch message {
        case .accepted, .result, .deadLetterReply: true
        default: false
        }
    }

    /// Sends the messages whose records the journal has synced.
    mutating func releaseSynced() {
        guard let journal, !waitingForSync.isEmpty, journalFailure == nil, journal.failure == nil else { return }
        let synced = journal.synced
        while let first = waitingForSync.first, first.position <= synced {
            waitingForSync.removeFirst()
            do { try sendNow(first.out) } catch { backlog.append(first.out) }
        }
    }

    /// Writes the records of this turn (after the upkeep that copies items out of an old
    /// segment), and asks for drained segments to be deleted once synced.
    private mutating func writeJournal() {
        guard let journal, journalFailure == nil else { return }
        if let failure = journal.failure {
            journalFailure = failure
            return
        }
        let drained = dispatcher.takeDrainedSegments()
        guard let chunks = dispatcher.journal?.takePending(), !chunks.isEmpty || !drained.isEmpty else { return }
        do {
            try journal.write(chunks, acceptedItems: dispatcher.takeJournalAcceptedItems())
            journal.delete(drained)
        } catch {
            journalFailure = error
        }
        guard journalFailure == nil else { return }
        if !diskFull { prepareNextSegment() }
        dispatcher.spillIfOverLimit()
        if let problem = dispatcher.payloadReadFailure, journalFailure == nil {
            journalFailure = JournalError("read", journal.directory, code: EIO, problem)
        }
    }

    /// Makes the next segment as soon as the current one is in use, reserving its space, so
    /// that a full disk shows itself while there is still room: new items are then refused
    /// (``JournalLog/canAccept(bytes:)`` keeps half a segment for what happens to the items
    /// already held: outcomes, retries, dead letters), nothing accepted is lost, and completed
    /// items free their segments. Accepting resumes when the next segment fits (tried again
    /// every heartbeat).
    mutating func prepareNextSegment() {
        guard let journal, let log = dispatcher.journal, journalFailure == nil, !log.nextSegmentReady else { return }
        do {
            try journal.prepare(log.currentSegment + 1)
            dispatcher.journal?.nextSegmentReady = true
            if diskFull {
                diskFull = false
                dispatcher.refusingItems = nil
                logger.notice("the journal's disk has room again; accepting items", metadata: ["data-dir": "\(journal.directory)"])
            }
        } catch where error.isNoSpace {
            if !diskFull {
                diskFull = true
                dispatcher.refusingItems = "the broker's disk is full (no room for the next journal segment in \(journal.directory)): "
                    + "new items are refused until completed items free space; items already accepted are safe; retry later"
                logger.error("the journal's disk is full: refusing new items until completed items free space (items already accepted are safe)",
                             metadata: ["data-dir": "\(journal.directory)", "error": "\(error)"])
            }
        } catch {
            journalFailure = error
        }
    }

    /// The journal failed: every producer still waiting to hear "accepted" is told its items
    /// were not stored (they offer them again, to this broker once restarted).
    mutating func refuseUnsynced(_ failure: JournalError) {
        let reason = "the broker could not store items (\(failure)); it is stopping, offer them again once it restarts"
        var refused: [PeerID: [ItemID]] = [:]
        for (_, out) in waitingForSync {
            if case .accepted(let ids) = out.message { refused[out.peer, default: []] += ids }
            if case .result(let outcomes) = out.message { refused[out.peer, default: []] += outcomes.map(\.id) }
        }
        waitingForSync.removeAll()
        for (peer, ids) in refused {
            try? sendNow(Outgoing(peer: peer, message: .rejected(Rejection(ids: ids, code: .storageUnavailable, reason: reason))))
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
