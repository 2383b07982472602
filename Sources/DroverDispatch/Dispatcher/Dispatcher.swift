import DequeModule
import DroverJournal
import DroverProtocol

/// A peer's routing identity on the broker's ROUTER socket.
public typealias PeerID = [UInt8]

/// A message the broker should send, in the order produced.
public struct Outgoing: Sendable, Equatable {
    public var peer: PeerID
    public var message: DroverMessage

    public init(peer: PeerID, message: DroverMessage) {
        self.peer = peer
        self.message = message
    }

    /// Deliveries for one worker, gathered during a dispatch.
    struct Batch {
        var peer: PeerID
        var deliveries: [Delivery]
    }
}

/// The broker's state machine: queues, workers, credit, leases, retries, dead letters.
/// Pure: no sockets, no clock (callers pass `now`), a seeded generator for jitter.
///
/// The broker's I/O loop feeds it decoded messages and the time, and sends what it puts in
/// ``takeOutbox()``. Dispatch is least-recently-used among workers that hold credit: a worker
/// joins the back of its queue's ready list when it gains credit, and each time it reaches the
/// front it gets an even share of what is queued (one item when items are scarce, at most its
/// credit), so no item waits behind a busy worker while another has a free thread.
///
/// Every accepted item is in exactly one place until it completes or is purged: a queue, a
/// lease, the retry schedule, or the dead-letter store (`held` counts them all).
public struct Dispatcher: Sendable {
    public let limits: DispatcherLimits
    public internal(set) var fleet = FleetState.initial
    public internal(set) var counters = Counters()
    var queues: [String: QueueState] = [:]
    var workers: [PeerID: WorkerRecord] = [:]
    var controllers: Set<PeerID> = []
    /// Every held item (queued, leased, waiting to retry, dead) and the recent completions.
    var items: ItemTable
    /// Producers waiting for outcomes.
    var producers = ProducerTable()
    /// Producers that said `hello`, and when each was last heard: only they may submit. One
    /// silent past the liveness window is forgotten (a producer says hello every heartbeat).
    var introducedProducers: [PeerID: Int64] = [:]
    /// Slots waiting out their retry backoff, latest due first (so the next due is `last`).
    var retries: [Retry] = []
    /// Slots in the dead-letter store, oldest first, and when each died.
    var deadOrder: Deque<UInt32> = []
    var deadSince: [UInt32: Int64] = [:]
    var departed: Deque<DepartedWorker> = []
    var nextSequence: UInt64 = 0
    var nextWorkerNumber: UInt32 = 1
    var outbox: [Outgoing] = []
    var random: SplitMix64
    /// This broker process, as told to peers in `welcome`.
    public let instance: UInt64
    /// The journal's records and books, when the broker keeps one (nil: in memory only). The
    /// broker writes what it appends (``JournalLog/takePending()``) after each turn.
    public var journal: JournalLog?
    /// Items first accepted since ``takeJournalAcceptedItems()``.
    var journalAcceptedItems = 0
    /// Payload bytes held, and of those in memory (``spillIfOverLimit()``).
    var payloadBytesHeld = 0
    var payloadBytesInMemory = 0
    /// Items whose payload was dropped from memory, since the broker started.
    public internal(set) var spilledItems = 0
    /// Reads `length` payload bytes at `offset` of journal segment `segment` (set by the
    /// broker; nil without a journal).
    public var readPayload: (@Sendable (UInt32, Int, Int) -> [UInt8]?)?
    /// Why a payload could not be read back from the journal: the broker must stop.
    public internal(set) var payloadReadFailure: String?
    /// Why new items are refused when the journal has no room reserved for them (its disk is
    /// full), or nil. Items already held are still run and their outcomes recorded.
    public var refusingItems: String?

    /// How many departures ``status(now:)`` remembers.
    static let departedMemory = 1024
    /// The most credit one worker may hold; a larger grant is capped (a misbehaving peer).
    static let maxCredit = 1 << 20

    public init(limits: DispatcherLimits, instance: UInt64 = UInt64.random(in: 1...UInt64.max),
                seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.limits = limits
        self.instance = instance
        self.random = SplitMix64(seed: seed)
        self.items = ItemTable(recentCapacity: limits.dedupWindow, recentPayloadBudget: limits.dedupPayloadBytes)
    }

    /// Messages produced since the last call, in order.
    public mutating func takeOutbox() -> [Outgoing] {
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }

    /// Whether messages are waiting in the outbox.
    public var hasOutbox: Bool { !outbox.isEmpty }

    /// Items held: queued, leased, waiting to retry, or dead.
    public var itemsHeld: Int { items.count }

    /// The routing identities of registered workers.
    public var workerPeers: [PeerID] { Array(workers.keys) }

    /// Whether `peer` is a registered worker.
    public func isWorker(_ peer: PeerID) -> Bool { workers[peer] != nil }

    /// When the next retry falls due, if any is scheduled.
    public var nextRetryDue: Int64? { retries.last?.due }

    // MARK: Producers

    /// A producer submitted a batch. Answers with `accepted` and/or `rejected`; a resubmitted
    /// id that is still held, or completed recently, is accepted again without a second copy.
    /// A batch that does not fit under the item limit is refused whole. A peer that has not
    /// said `hello` as a producer is answered with error 3 (it says hello, then offers again).
    public mutating func submit(from peer: PeerID, _ submit: Submit, now: Int64) {
        guard introducedProducers[peer] != nil else {
            if workers[peer] != nil || controllers.contains(peer) {
                send(peer, .error(.notAllowed, "only a producer may submit items; say hello with role 1 on a connection of its own"))
            } else {
                send(peer, .error(.unknownPeer, "submit before hello: this broker does not know you (it may have restarted); send hello (role 1), then submit again"))
            }
            return
        }
        introducedProducers[peer] = now
        if let problem = QueueName.problem(submit.queue) {
            reject(peer, submit.items.map(\.id), .badQueueName, problem)
            return
        }
        let payloadBytes = submit.items.reduce(0) { $0 + $1.payload.count }
        if refusedForBytes(peer, submit.items.map(\.id), bytes: payloadBytes) { return }
        if let log = journal {
            let bytes = payloadBytes + 20 * submit.items.count + 64 * (1 + submit.items.count / 64)
            if !log.canAccept(bytes: bytes) {
                reject(peer, submit.items.map(\.id), .storageUnavailable,
                       refusingItems ?? "the broker's journal is reserving space for its next segment; retry in a moment")
                return
            }
        }
        if fleet.phase == .exiting {
            reject(peer, submit.items.map(\.id), .fleetExiting, "the fleet is shutting down (exit, epoch \(fleet.epoch)); restart the controller to start a new run")
            return
        }
        let heldBefore = items.count
        let producer = submit.wantsResults ? producers.number(for: peer) : 0
        var tooLarge: [ItemID] = []
        var accepted: [ItemID] = []
        var fresh: [UInt32] = []
        var resend: [ItemOutcome] = []
        accepted.reserveCapacity(submit.items.count)
        fresh.reserveCapacity(submit.items.count)
        for submitted in submit.items {
            if submitted.payload.count > limits.maxItemBytes {
                tooLarge.append(submitted.id)
                continue
            }
            let item = Item(id: submitted.id, queue: submit.queue, payload: submitted.payload,
                            timeoutMilliseconds: submit.itemTimeoutMilliseconds, sequence: nextSequence)
            if let slot = items.insert(item, producer: producer) {
                nextSequence &+= 1
                fresh.append(slot)
                if producer != 0 { producers.retain(producer) }
                continue
            }
            counters.duplicates += 1
            accepted.append(submitted.id)
            switch items.lookup(submitted.id) {
            case .held(let slot):
                if submit.wantsResults && items[slot].state != .dead { route(slot, to: producer) }
            case .recent(let outcome):
                if submit.wantsResults, let outcome { resend.append(outcome) }
            case .unknown:
                break
            }
        }
        if !tooLarge.isEmpty {
            reject(peer, tooLarge, .tooLarge, "item larger than the broker's maximum of \(limits.maxItemBytes) bytes (broker --max-item-size)")
        }
        if items.count > limits.maxItems {
            let refused = fresh.map { items[$0].item.id }
            for slot in fresh {
                if producer != 0 { producers.release(producer) }
                items.remove(slot)
            }
            fresh.removeAll()
            // An id given twice in the batch must not be "accepted" as a duplicate of itself.
            let gone = Set(refused)
            accepted.removeAll { gone.contains($0) }
            reject(peer, refused, .queueFull, "the broker holds \(heldBefore) items, its maximum is \(limits.maxItems) (broker --max-items); retry later")
        }
        if producer != 0 { producers.releaseIfUnused(producer) }
        for slot in fresh { countIn(slot) }
        journalAccepted(fresh, queue: submit.queue, timeoutMilliseconds: submit.itemTimeoutMilliseconds)
        if !fresh.isEmpty {
            // Taken out of the dictionary so that appending does not copy the whole queue.
            var queue = queues.removeValue(forKey: submit.queue) ?? QueueState()
            queue.items.append(contentsOf: fresh)
            queues[submit.queue] = queue
            counters.accepted += fresh.count
        }
        // A producer that waits for outcomes hears `accepted` only for the items still queued:
        // one handed to a worker at once is acknowledged by its `result`, which follows shortly.
        // At moderate rates every message costs each thread on its way a wake-up, and those
        // wake-ups are most of the cost; this spares two per item.
        dispatch(submit.queue)
        for slot in fresh where !submit.wantsResults || items[slot].state == .queued { accepted.append(items[slot].item.id) }
        if !accepted.isEmpty { send(peer, .accepted(accepted)) }
        if !resend.isEmpty { send(peer, .result(resend)) }
    }

    /// The outcome of the item in `slot` goes to `producer` (a number, 0 for nobody) from now on.
    mutating func route(_ slot: UInt32, to producer: UInt32) {
        let old = items[slot].producer
        guard old != producer else { return }
        if old != 0 { producers.release(old) }
        if producer != 0 { producers.retain(producer) }
        items[slot].producer = producer
    }

    // MARK: Dispatch

    /// Hands queued items to the workers holding credit, least recently served first. Each
    /// turn gives a worker an even share of what was queued (at least one item, at most its
    /// credit), so a scarce item goes to the worker idle longest and a deep queue goes out in
    /// one batch per worker.
    mutating func dispatch(_ name: String) {
        guard var queue = queues[name], !queue.items.isEmpty, !queue.ready.isEmpty else { return }
        queues[name] = nil  // avoid copy-on-write while we mutate it
        var batches: [Outgoing.Batch] = []
        var batchOf: [PeerID: Int] = [:]
        let share = max(1, queue.items.count / queue.ready.count)
        while !queue.items.isEmpty, let peer = queue.ready.popFirst() {
            guard var record = workers[peer], record.credit > 0, !record.draining else { continue }
            let count = min(record.credit, share, queue.items.count)
            var deliveries: [Delivery] = []
            deliveries.reserveCapacity(count)
            for _ in 0..<count {
                let slot = queue.items.first!
                guard loadPayload(slot) else { break }
                queue.items.removeFirst()
                items.lease(slot, to: &record)
                let attempt = items.slots[Int(slot)].item.deliveries
                if attempt > 1 { counters.redelivered += 1 }
                deliveries.append(Delivery(id: items.slots[Int(slot)].item.id, attempt: attempt,
                                           timeoutMilliseconds: items.slots[Int(slot)].item.timeoutMilliseconds,
                                           payload: items.slots[Int(slot)].item.payload))
            }
            // Fewer than `count` only when a payload could not be read back (the broker stops).
            let given = deliveries.count
            counters.delivered += given
            record.credit -= given
            if record.credit > 0 { queue.ready.append(peer) }
            workers[peer] = record
            if given > 0 {
                if let index = batchOf[peer] {
                    batches[index].deliveries += deliveries
                } else {
                    batchOf[peer] = batches.count
                    batches.append(Outgoing.Batch(peer: peer, deliveries: deliveries))
                }
            }
            if payloadReadFailure != nil { break }
        }
        queues[name] = queue
        for batch in batches { send(batch.peer, .deliver(batch.deliveries)) }
    }

    /// Puts items (slots just released from leases) back at the front of their queues, in
    /// acceptance order.
    mutating func requeueAtFront(_ slots: [UInt32]) {
        guard !slots.isEmpty else { return }
        journalReturned(slots)
        var touched: Set<String> = []
        for slot in slots.sorted(by: { items[$0].item.sequence > items[$1].item.sequence }) {
            items[slot].state = .queued
            queues[items[slot].item.queue, default: QueueState()].items.prepend(slot)
            touched.insert(items[slot].item.queue)
        }
        for name in touched { dispatch(name) }
    }

    // MARK: Helpers

    mutating func reject(_ peer: PeerID, _ ids: [ItemID], _ code: Rejection.Code, _ reason: String) {
        counters.rejected += ids.count
        send(peer, .rejected(Rejection(ids: ids, code: code, reason: reason)))
    }

    mutating func send(_ peer: PeerID, _ message: DroverMessage) {
        outbox.append(Outgoing(peer: peer, message: message))
    }
}
