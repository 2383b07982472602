import DequeModule
import DroverProtocol

/// A peer's routing identity on the broker's ROUTER socket.
public typealias PeerID = [UInt8]

/// A message the broker should send, in the order produced.
public struct Outgoing: Sendable, Equatable {
    public var peer: PeerID
    public var message: DroverMessage
}

/// The broker's state machine: queues, workers, credit, leases. Pure: no sockets, no clock.
///
/// The broker's I/O loop feeds it decoded messages and the time, and sends what it puts in
/// ``takeOutbox()``. Dispatch is least-recently-used among workers that hold credit: a worker
/// joins the back of its queue's ready list when it gains credit, and gets one item each time it
/// reaches the front, so no item waits behind a busy worker while another has a free thread.
public struct Dispatcher: Sendable {
    /// Limits the dispatcher enforces.
    public struct Limits: Sendable {
        /// Largest item payload accepted, in bytes.
        public var maxItemBytes: Int
        /// Most items held (queued and leased) across all queues; more are refused as "queue full".
        public var maxItems: Int
        /// Milliseconds of silence after which a worker is declared dead and its items redelivered.
        public var workerLivenessMilliseconds: Int64

        public init(maxItemBytes: Int, maxItems: Int, workerLivenessMilliseconds: Int64) {
            self.maxItemBytes = maxItemBytes
            self.maxItems = maxItems
            self.workerLivenessMilliseconds = workerLivenessMilliseconds
        }
    }

    /// An accepted item, waiting in a queue or leased to a worker.
    struct Item: Sendable {
        var id: ItemID
        var queue: String
        var payload: [UInt8]
        /// Deliveries made so far; the next delivery's attempt is `deliveries + 1`.
        var deliveries: UInt32
        /// The producer to send the outcome to, when it asked for one.
        var replyTo: PeerID?
        /// Acceptance order, so items handed back return to the queue in their original order.
        var sequence: UInt64
    }

    struct Lease: Sendable {
        var item: Item
        var worker: PeerID
        var attempt: UInt32
    }

    struct WorkerRecord: Sendable {
        var name: String
        var queue: String
        var concurrency: Int
        var credit = 0
        var leased: Set<ItemID> = []
        var lastSeen: Int64
        var draining = false
        var completed = 0
        var handedBack = 0
    }

    struct QueueState: Sendable {
        var items: Deque<Item> = []
        /// Workers with credit, least recently served first.
        var ready: Deque<PeerID> = []
    }

    /// Why a worker left the broker's books.
    public enum Departure: Sendable, Equatable {
        /// It said goodbye, with its reason.
        case bye(String)
        /// It stopped heartbeating for longer than the liveness window.
        case silent
        /// The ROUTER could no longer route to it.
        case unreachable
    }

    /// Counters for status and logs.
    public struct Counters: Sendable, Codable, Equatable {
        public var accepted = 0
        public var rejected = 0
        public var delivered = 0
        public var completed = 0
        public var failed = 0
        public var handedBack = 0
        public var redelivered = 0
        public var staleOutcomes = 0
    }

    public let limits: Limits
    public private(set) var fleet = FleetState.initial
    public private(set) var counters = Counters()
    var queues: [String: QueueState] = [:]
    var workers: [PeerID: WorkerRecord] = [:]
    var controllers: Set<PeerID> = []
    var leases: [ItemID: Lease] = [:]
    private(set) var departed: Deque<DepartedWorker> = []
    private var nextSequence: UInt64 = 0
    private var held = 0
    private var outbox: [Outgoing] = []

    /// How many departures ``status(now:)`` remembers.
    static let departedMemory = 1024
    /// The most credit one worker may hold; a larger grant is capped (a misbehaving peer).
    static let maxCredit = 1 << 20

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Messages produced since the last call, in order.
    public mutating func takeOutbox() -> [Outgoing] {
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }

    /// Items queued or leased.
    public var itemsHeld: Int { held }

    /// The routing identities of registered workers.
    public var workerPeers: [PeerID] { Array(workers.keys) }

    /// Whether `peer` is a registered worker.
    public func isWorker(_ peer: PeerID) -> Bool { workers[peer] != nil }

    // MARK: Events

    /// A peer introduced itself.
    public mutating func hello(from peer: PeerID, _ hello: Hello, now: Int64, heartbeatMilliseconds: UInt32) {
        switch hello.role {
        case .worker:
            if var record = workers[peer] {
                // A worker that re-registers (it lost contact with us) keeps its leases: it is
                // still running those items. Its old credit is void; it grants afresh.
                record.name = hello.name
                record.credit = 0
                record.lastSeen = now
                record.draining = false
                workers[peer] = record
                removeFromReady(peer, queue: record.queue)
            } else {
                workers[peer] = WorkerRecord(name: hello.name, queue: hello.queue,
                                             concurrency: Int(hello.concurrency), lastSeen: now)
            }
        case .controller:
            controllers.insert(peer)
        case .producer:
            break
        }
        send(peer, .welcome(Welcome(maxItemBytes: UInt32(limits.maxItemBytes),
                                    heartbeatMilliseconds: heartbeatMilliseconds, fleet: fleet)))
    }

    /// Any message from `peer` shows it is alive.
    public mutating func seen(_ peer: PeerID, now: Int64) {
        workers[peer]?.lastSeen = now
    }

    /// A producer submitted a batch. Answers with `accepted` and/or `rejected`.
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
        var fitting: [SubmittedItem] = []
        fitting.reserveCapacity(submit.items.count)
        for item in submit.items {
            if item.payload.count > limits.maxItemBytes { tooLarge.append(item.id) } else { fitting.append(item) }
        }
        if !tooLarge.isEmpty {
            reject(peer, tooLarge, .tooLarge, "item larger than the broker's maximum of \(limits.maxItemBytes) bytes (broker --max-item-size)")
        }
        guard !fitting.isEmpty else { return }
        guard held + fitting.count <= limits.maxItems else {
            reject(peer, fitting.map(\.id), .queueFull, "the broker holds \(held) items, its maximum is \(limits.maxItems) (broker --max-items); retry later")
            return
        }
        var queue = queues[submit.queue, default: QueueState()]
        for item in fitting {
            queue.items.append(Item(id: item.id, queue: submit.queue, payload: item.payload, deliveries: 0,
                                    replyTo: submit.wantsResults ? peer : nil, sequence: nextSequence))
            nextSequence &+= 1
        }
        queues[submit.queue] = queue
        held += fitting.count
        counters.accepted += fitting.count
        send(peer, .accepted(fitting.map(\.id)))
        dispatch(submit.queue)
    }

    /// A worker granted `amount` more credit.
    public mutating func credit(from peer: PeerID, _ amount: UInt32) {
        guard var record = workers[peer] else { return unknownPeer(peer) }
        grant(&record, peer: peer, amount)
        workers[peer] = record
        dispatch(record.queue)
    }

    /// A worker finished deliveries and granted `amount` more credit.
    public mutating func done(from peer: PeerID, credit amount: UInt32, _ outcomes: [ItemOutcome]) {
        guard var record = workers[peer] else { return unknownPeer(peer) }
        var results: [PeerID: [ItemOutcome]] = [:]
        for outcome in outcomes {
            // Fencing: only the current delivery of an item may complete it.
            guard let lease = leases[outcome.id], lease.worker == peer, lease.attempt == outcome.attempt else {
                counters.staleOutcomes += 1
                continue
            }
            leases[outcome.id] = nil
            record.leased.remove(outcome.id)
            record.completed += 1
            held -= 1
            switch outcome.status {
            case .succeeded: counters.completed += 1
            case .failed: counters.failed += 1
            }
            if let producer = lease.item.replyTo { results[producer, default: []].append(outcome) }
        }
        grant(&record, peer: peer, amount)
        workers[peer] = record
        for (producer, list) in results { send(producer, .result(list)) }
        dispatch(record.queue)
    }

    /// A worker handed deliveries back unstarted; it is draining and gets no more work.
    public mutating func handBack(from peer: PeerID, _ refs: [DeliveryRef]) {
        guard var record = workers[peer] else { return unknownPeer(peer) }
        record.draining = true
        record.credit = 0
        removeFromReady(peer, queue: record.queue)
        var returned: [Lease] = []
        for ref in refs {
            guard let lease = leases[ref.id], lease.worker == peer, lease.attempt == ref.attempt else {
                counters.staleOutcomes += 1
                continue
            }
            leases[ref.id] = nil
            record.leased.remove(ref.id)
            returned.append(lease)
        }
        record.handedBack += returned.count
        workers[peer] = record
        counters.handedBack += returned.count
        requeue(returned)
    }

    /// A worker is leaving. Its remaining leases go back to the queue; it gets a `bye` back as
    /// the acknowledgement it waits for before exiting. Returns the departure when it was a worker.
    @discardableResult
    public mutating func bye(from peer: PeerID, reason: String, now: Int64) -> DepartedWorker? {
        controllers.remove(peer)
        send(peer, .bye("ok"))
        return remove(peer, because: .bye(reason), now: now)
    }

    /// A controller announced fleet state; a newer epoch replaces ours and goes to every worker.
    /// Returns whether the state changed.
    @discardableResult
    public mutating func fleetState(from peer: PeerID, _ state: FleetState) -> Bool {
        guard controllers.contains(peer) else {
            send(peer, .error(.notAllowed, "only a controller may set fleet state; say hello as a controller first"))
            return false
        }
        guard state.epoch > fleet.epoch else { return false }
        fleet = state
        for worker in workers.keys { send(worker, .fleet(state)) }
        return true
    }

    /// Declares dead every worker silent for longer than the liveness window; returns their names.
    @discardableResult
    public mutating func expireSilentWorkers(now: Int64) -> [String] {
        let silent = workers.filter { now - $0.value.lastSeen > limits.workerLivenessMilliseconds }
        for peer in silent.keys { remove(peer, because: .silent, now: now) }
        return silent.values.map(\.name)
    }

    /// The ROUTER could not route to `peer` (it is gone). Returns `true` when it was a worker.
    @discardableResult
    public mutating func unreachable(_ peer: PeerID, now: Int64) -> Bool {
        controllers.remove(peer)
        guard workers[peer] != nil else { return false }
        remove(peer, because: .unreachable, now: now)
        return true
    }

    /// A `deliver` could not be sent (the worker's pipe is full or gone): its items return to the queue.
    public mutating func undelivered(to peer: PeerID, _ deliveries: [Delivery]) {
        var returned: [Lease] = []
        for d in deliveries {
            guard let lease = leases[d.id], lease.worker == peer, lease.attempt == d.attempt else { continue }
            leases[d.id] = nil
            workers[peer]?.leased.remove(d.id)
            returned.append(lease)
        }
        requeue(returned)
    }

    // MARK: Internals

    private mutating func grant(_ record: inout WorkerRecord, peer: PeerID, _ amount: UInt32) {
        guard !record.draining, amount > 0 else { return }
        let wasReady = record.credit > 0
        record.credit = min(record.credit + Int(amount), Self.maxCredit)
        if !wasReady { queues[record.queue, default: QueueState()].ready.append(peer) }
    }

    private mutating func dispatch(_ name: String) {
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

    private mutating func requeue(_ returned: [Lease]) {
        guard !returned.isEmpty else { return }
        var touched: Set<String> = []
        for lease in returned.sorted(by: { $0.item.sequence > $1.item.sequence }) {
            queues[lease.item.queue, default: QueueState()].items.prepend(lease.item)
            touched.insert(lease.item.queue)
        }
        for name in touched { dispatch(name) }
    }

    @discardableResult
    private mutating func remove(_ peer: PeerID, because departure: Departure, now: Int64) -> DepartedWorker? {
        guard let record = workers.removeValue(forKey: peer) else { return nil }
        removeFromReady(peer, queue: record.queue)
        let returned = record.leased.compactMap { leases.removeValue(forKey: $0) }
        let gone = DepartedWorker(name: record.name, queue: record.queue, departure: departure,
                                  completed: record.completed, itemsReturned: record.handedBack + returned.count, at: now)
        departed.append(gone)
        if departed.count > Self.departedMemory { departed.removeFirst() }
        requeue(returned)
        return gone
    }

    private mutating func removeFromReady(_ peer: PeerID, queue name: String) {
        queues[name]?.ready.removeAll { $0 == peer }
    }

    private mutating func reject(_ peer: PeerID, _ ids: [ItemID], _ code: Rejection.Code, _ reason: String) {
        counters.rejected += ids.count
        send(peer, .rejected(Rejection(ids: ids, code: code, reason: reason)))
    }

    private mutating func unknownPeer(_ peer: PeerID) {
        send(peer, .error(.unknownPeer, "this broker does not know you (it may have restarted): send hello again"))
    }

    private mutating func send(_ peer: PeerID, _ message: DroverMessage) {
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

/// A worker that has left, remembered for status and for `drover exit` progress.
public struct DepartedWorker: Sendable, Equatable {
    public var name: String
    public var queue: String
    public var departure: Dispatcher.Departure
    public var completed: Int
    public var itemsReturned: Int
    /// When it left, in the broker's clock milliseconds.
    public var at: Int64
}
