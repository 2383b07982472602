import DequeModule
import DroverProtocol

/// A peer's routing identity on the broker's ROUTER socket.
public typealias PeerID = [UInt8]

/// A message the broker should send, in the order produced.
public struct Outgoing: Sendable, Equatable {
    public var peer: PeerID
    public var message: DroverMessage
}

/// The broker's state machine: queues, workers, credit, leases, retries, dead letters.
/// Pure: no sockets, no clock (callers pass `now`), a seeded generator for jitter.
///
/// The broker's I/O loop feeds it decoded messages and the time, and sends what it puts in
/// ``takeOutbox()``. Dispatch is least-recently-used among workers that hold credit: a worker
/// joins the back of its queue's ready list when it gains credit, and gets one item each time it
/// reaches the front, so no item waits behind a busy worker while another has a free thread.
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
    var leases: [ItemID: Lease] = [:]
    /// Ids of items queued, leased or waiting to retry: a resubmission of one is a duplicate.
    var live: Set<ItemID> = []
    /// Producers waiting for an item's outcome.
    var routes: [ItemID: PeerID] = [:]
    /// Items waiting out their retry backoff, latest due first (so the next due is `last`).
    var retries: [(due: Int64, item: Item)] = []
    var dead: [ItemID: DeadLetter] = [:]
    var deadOrder: Deque<ItemID> = []
    var recent = RecentOutcomes(capacity: 0, payloadBudget: 0)
    var departed: Deque<DepartedWorker> = []
    var nextSequence: UInt64 = 0
    var held = 0
    var outbox: [Outgoing] = []
    var random: SplitMix64
    /// This broker process, as told to peers in `welcome`.
    public let instance: UInt64

    /// How many departures ``status(now:)`` remembers.
    static let departedMemory = 1024
    /// The most credit one worker may hold; a larger grant is capped (a misbehaving peer).
    static let maxCredit = 1 << 20

    public init(limits: DispatcherLimits, instance: UInt64 = UInt64.random(in: 1...UInt64.max),
                seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.limits = limits
        self.instance = instance
        self.random = SplitMix64(seed: seed)
        self.recent = RecentOutcomes(capacity: limits.dedupWindow, payloadBudget: limits.dedupPayloadBytes)
    }

    /// Messages produced since the last call, in order.
    public mutating func takeOutbox() -> [Outgoing] {
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }

    /// Items held: queued, leased, waiting to retry, or dead.
    public var itemsHeld: Int { held }

    /// The routing identities of registered workers.
    public var workerPeers: [PeerID] { Array(workers.keys) }

    /// Whether `peer` is a registered worker.
    public func isWorker(_ peer: PeerID) -> Bool { workers[peer] != nil }

    /// When the next retry falls due, if any is scheduled.
    public var nextRetryDue: Int64? { retries.last?.due }

    // MARK: Producers

    /// A producer submitted a batch. Answers with `accepted` and/or `rejected`; a resubmitted
    /// id that is still held, or completed recently, is accepted again without a second copy.
    public mutating func submit(from peer: PeerID, _ submit: Submit) {
        let ids = submit.items.map(\.id)
        if let problem = Self.queueNameProblem(submit.queue) {
            reject(peer, ids, .badQueueName, problem)
            return
        }
        if fleet.phase == .exiting {
            reject(peer, ids, .fleetExiting, "the fleet is shutting down (exit, epoch \(fleet.epoch)); restart the controller to start a new run")
            return
        }
        var tooLarge: [ItemID] = []
        var accepted: [ItemID] = []
        var fresh: [SubmittedItem] = []
        var resend: [ItemOutcome] = []
        accepted.reserveCapacity(submit.items.count)
        fresh.reserveCapacity(submit.items.count)
        for item in submit.items {
            if item.payload.count > limits.maxItemBytes {
                tooLarge.append(item.id)
            } else if live.contains(item.id) || dead[item.id] != nil {
                counters.duplicates += 1
                accepted.append(item.id)
                if submit.wantsResults && dead[item.id] == nil { routes[item.id] = peer }
            } else if let outcome = recent.outcome(item.id) {
                counters.duplicates += 1
                accepted.append(item.id)
                if submit.wantsResults, let outcome { resend.append(outcome) }
            } else {
                fresh.append(item)
            }
        }
        if !tooLarge.isEmpty {
            reject(peer, tooLarge, .tooLarge, "item larger than the broker's maximum of \(limits.maxItemBytes) bytes (broker --max-item-size)")
        }
        if held + fresh.count > limits.maxItems {
            reject(peer, fresh.map(\.id), .queueFull, "the broker holds \(held) items, its maximum is \(limits.maxItems) (broker --max-items); retry later")
            fresh.removeAll()
        }
        if !fresh.isEmpty {
            // Taken out of the dictionary so that appending does not copy the whole queue.
            var queue = queues.removeValue(forKey: submit.queue) ?? QueueState()
            for item in fresh {
                queue.items.append(Item(id: item.id, queue: submit.queue, payload: item.payload, sequence: nextSequence))
                nextSequence &+= 1
                live.insert(item.id)
                if submit.wantsResults { routes[item.id] = peer }
                accepted.append(item.id)
            }
            queues[submit.queue] = queue
            held += fresh.count
            counters.accepted += fresh.count
        }
        if !accepted.isEmpty { send(peer, .accepted(accepted)) }
        if !resend.isEmpty { send(peer, .result(resend)) }
        dispatch(submit.queue)
    }

    // MARK: Dispatch

    mutating func dispatch(_ name: String) {
        guard var queue = queues[name], !queue.items.isEmpty, !queue.ready.isEmpty else { return }
        queues[name] = nil  // avoid copy-on-write while we mutate it
        var batches: [PeerID: [Delivery]] = [:]
        var order: [PeerID] = []
        while !queue.items.isEmpty, let peer = queue.ready.popFirst() {
            guard var record = workers[peer], record.credit > 0, !record.draining else { continue }
            var item = queue.items.removeFirst()
            item.deliveries += 1
            let attempt = item.deliveries
            if attempt > 1 { counters.redelivered += 1 }
            counters.delivered += 1
            leases[item.id] = Lease(item: item, worker: peer, attempt: attempt)
            record.leased.insert(item.id)
            record.credit -= 1
            if record.credit > 0 { queue.ready.append(peer) }
            workers[peer] = record
            if batches[peer] == nil { order.append(peer) }
            batches[peer, default: []].append(Delivery(id: item.id, attempt: attempt, payload: item.payload))
        }
        queues[name] = queue
        for peer in order { send(peer, .deliver(batches[peer]!)) }
    }

    /// Puts leased items back at the front of their queues, in acceptance order.
    mutating func requeueAtFront(_ items: [Item]) {
        guard !items.isEmpty else { return }
        var touched: Set<String> = []
        for item in items.sorted(by: { $0.sequence > $1.sequence }) {
            queues[item.queue, default: QueueState()].items.prepend(item)
            touched.insert(item.queue)
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

    /// Why a queue name is unusable, or `nil` when it is fine.
    public static func queueNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "the queue name is empty; use --queue NAME" }
        if name.utf8.count > Codec.maxNameBytes { return "the queue name is longer than \(Codec.maxNameBytes) bytes" }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == " " }) {
            return "the queue name \"\(name)\" contains spaces or control characters"
        }
        return nil
    }
}
