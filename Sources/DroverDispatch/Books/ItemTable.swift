import DequeModule
import DroverProtocol

/// Every item the broker holds, in dense slots addressed by number, and one index from item id
/// to where that id is: a held item's slot, or its place among recent completions.
///
/// Why this shape: the broker touches each item at submit, dispatch, outcome and completion.
/// Hashing a 16-byte id is the one cost that grows with the books (a large table misses the
/// cache), so the id is hashed once when the item arrives (insert), once when its outcome
/// arrives (find) and once when its memory as a recent completion ends; queues, leases and
/// retries refer to slot numbers. A worker's leases are a list threaded through the slots
/// (`previous` / `next`), so losing a worker walks only its own items.
struct ItemTable: Sendable {
    /// No slot: the end of a lease list.
    static let none = UInt32.max
    /// Set in an index value that points into ``recent`` rather than at a slot.
    private static let recentFlag: UInt64 = 1 << 63

    /// Where an id stands.
    enum Lookup {
        /// Held in this slot (queued, leased, retrying or dead).
        case held(UInt32)
        /// Completed recently; the outcome when someone may ask for it again.
        case recent(ItemOutcome?)
        case unknown
    }

    private(set) var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var index = ItemIndex()
    /// Why each item that has failed last failed, by slot; kept apart because few items fail
    /// and a text in every slot would cost 16 bytes per held item.
    private var lastErrors: [UInt32: String] = [:]

    /// Completed ids, oldest first, remembered to answer a resubmission instead of running it
    /// again. Bounded by count and by the bytes of outcomes kept.
    private var recent: Deque<RecentCompletion> = []
    /// The position, counted since the broker started, of `recent.first`.
    private var recentBase: UInt64 = 0
    private var recentPayloadBytes = 0
    let recentCapacity: Int
    let recentPayloadBudget: Int
    /// Segments of recent completions forgotten, for the journal's books (``takeEvictedSegments()``).
    private var evictedSegments: [(segment: UInt32, bytes: Int)] = []
    /// A recent completion with no journal record.
    static let noSegment = UInt32.max

    init(recentCapacity: Int, recentPayloadBudget: Int) {
        self.recentCapacity = recentCapacity
        self.recentPayloadBudget = recentPayloadBudget
    }

    /// Items held.
    var count: Int { slots.count - freeSlots.count }

    // `_read` lends the slot in place: reading one field must not copy (and retain) the payload.
    subscript(slot: UInt32) -> Slot {
        _read { yield slots[Int(slot)] }
        _modify { yield &slots[Int(slot)] }
    }

    func lookup(_ id: ItemID) -> Lookup {
        guard let value = index[id] else { return .unknown }
        if value & Self.recentFlag == 0 { return .held(UInt32(value)) }
        return .recent(recent[Int((value & ~Self.recentFlag) - recentBase)].outcome)
    }

    /// The slot holding `id`, if it is held.
    func slot(of id: ItemID) -> UInt32? {
        if case .held(let slot) = lookup(id) { return slot }
        return nil
    }

    /// Stores a new item and returns its slot, or `nil` (storing nothing) when the id is
    /// already known: held, or completed recently. One hash of the id when it is new.
    mutating func insert(_ item: Dispatcher.Item, producer: UInt32) -> UInt32? {
        let slot = freeSlots.last ?? UInt32(slots.count)
        if index.insertIfAbsent(item.id, UInt64(slot)) != nil { return nil }
        let entry = Slot(item: item, producer: producer)
        if freeSlots.isEmpty {
            slots.append(entry)
        } else {
            freeSlots.removeLast()
            slots[Int(slot)] = entry
        }
        return slot
    }

    /// Forgets a held item entirely (purged, or taken back before it was accepted).
    mutating func remove(_ slot: UInt32) {
        index.remove(slots[Int(slot)].item.id)
        release(slot)
    }

    /// The item completed: its slot is freed and its id joins the recent completions, with
    /// `outcome` kept when someone may ask for it again.
    /// `position` is the id's place in the index (from ``endLease(_:attempt:of:)``, with no
    /// change to the table since).
    mutating func complete(_ slot: UInt32, at position: Int, outcome: ItemOutcome?) {
        let id = slots[Int(slot)].item.id
        release(slot)
        guard recentCapacity > 0 else { return index.remove(at: position) }
        index.setValue(Self.recentFlag | (recentBase + UInt64(recent.count)), at: position)
        recent.append(RecentCompletion(id: id, outcome: outcome, position: position, growths: index.growths))
        recentPayloadBytes += outcome?.payload.count ?? 0
        evictOldCompletions()
    }

    private mutating func evictOldCompletions() {
        while recent.count > recentCapacity || recentPayloadBytes > recentPayloadBudget, let oldest = recent.popFirst() {
            recentPayloadBytes -= oldest.outcome?.payload.count ?? 0
            if oldest.segment != ItemTable.noSegment { evictedSegments.append((oldest.segment, Self.journalBytes(oldest.outcome))) }
            let mine = Self.recentFlag | recentBase
            // Its place in the index is known unless the index has grown since; and the id may
            // have become a held item again since (only in recovery), which must stay.
            if oldest.growths == index.growths {
                if index.value(at: oldest.position) == mine { index.remove(at: oldest.position, id: oldest.id) }
            } else if let gone = index.find(oldest.id), index.value(at: gone) == mine {
                index.remove(at: gone)
            }
            recentBase += 1
        }
    }

    /// Records that the completions since the table held `recentTotal` completions (the value
    /// of ``recentTotal`` then) have their journal record in `segment`; returns the bytes of
    /// those still remembered (they keep the segment).
    mutating func placeRecentCompletions(since total: UInt64, upTo last: UInt64? = nil, in segment: UInt32) -> Int {
        let first = max(total, recentBase)
        let end = min(last ?? .max, recentBase + UInt64(recent.count))
        guard first < end else { return 0 }
        var bytes = 0
        for i in Int(first - recentBase)..<recent.count {
            recent[i].segment = segment
            bytes += Self.journalBytes(recent[i].outcome)
        }
        return bytes
    }

    /// About how many bytes a completion's journal record takes.
    static func journalBytes(_ outcome: ItemOutcome?) -> Int { 17 + (outcome.map { 8 + $0.payload.count } ?? 0) }

    /// Completions remembered since the broker started, counting those forgotten.
    var recentTotal: UInt64 { recentBase + UInt64(recent.count) }

    /// Segments of completions forgotten since the last call (their records may go).
    mutating func takeEvictedSegments() -> [(segment: UInt32, bytes: Int)] {
        defer { evictedSegments.removeAll(keepingCapacity: true) }
        return evictedSegments
    }

    /// The recent completions whose record is in `segment`: their places in ``recent`` and outcomes.
    func recentCompletions(in segment: UInt32) -> [(place: Int, id: ItemID, outcome: ItemOutcome?)] {
        recent.indices.filter { recent[$0].segment == segment && isCurrent($0) }.map { ($0, recent[$0].id, recent[$0].outcome) }
    }

    /// Whether the recent completion at `place` is still what the index says of its id (in
    /// recovery, an id accepted again after the window forgot it replaces its completion).
    func isCurrent(_ place: Int) -> Bool {
        index[recent[place].id] == Self.recentFlag | (recentBase + UInt64(place))
    }

    /// ``recentSegments`` of the completions still current.
    var currentRecentSegments: [(segment: UInt32, bytes: Int)] {
        recent.indices.filter(isCurrent).map { (recent[$0].segment, Self.journalBytes(recent[$0].outcome)) }
    }

    /// The ids of the remembered completions, oldest first.
    var recentIDs: [ItemID] { recent.map(\.id) }

    /// The segment of every remembered completion, and its record's bytes (for the journal's
    /// books after recovery).
    var recentSegments: [(segment: UInt32, bytes: Int)] { recent.map { ($0.segment, Self.journalBytes($0.outcome)) } }

    mutating func moveRecentCompletion(at place: Int, to segment: UInt32) { recent[place].segment = segment }

    // MARK: Recovery

    /// Stores `item` in recovery: a new slot, or the one `id` already has (replacing it), or
    /// taking the place of a recent completion of the same id (it was accepted again after
    /// the window forgot it). Returns the slot.
    mutating func restore(_ item: Dispatcher.Item, state: State) -> UInt32 {
        if let position = index.find(item.id) {
            let value = index.value(at: position)
            if value & Self.recentFlag == 0 {
                let slot = UInt32(value)
                slots[Int(slot)].item = item
                slots[Int(slot)].state = state
                return slot
            }
            let slot = freeSlots.last ?? UInt32(slots.count)
            index.setValue(UInt64(slot), at: position)
            place(Slot(item: item, producer: 0, state: state), at: slot)
            return slot
        }
        let slot = freeSlots.last ?? UInt32(slots.count)
        _ = index.insertIfAbsent(item.id, UInt64(slot))
        place(Slot(item: item, producer: 0, state: state), at: slot)
        return slot
    }

    private mutating func place(_ entry: Slot, at slot: UInt32) {
        if freeSlots.last == slot {
            freeSlots.removeLast()
            slots[Int(slot)] = entry
        } else {
            slots.append(entry)
        }
    }

    /// A completion met in recovery: completes the held item, or remembers the id (again,
    /// with its newer record's `segment`, if it is remembered already).
    mutating func restoreCompletion(_ id: ItemID, outcome: ItemOutcome?, segment: UInt32) {
        guard recentCapacity > 0 else {
            if let slot = slot(of: id) { remove(slot) }
            return
        }
        if let position = index.find(id) {
            let value = index.value(at: position)
            if value & Self.recentFlag != 0 {
                recent[Int((value & ~Self.recentFlag) - recentBase)].segment = segment
                return
            }
            complete(UInt32(value), at: position, outcome: outcome)
        } else {
            let position = recentTotal
            _ = index.insertIfAbsent(id, Self.recentFlag | position)
            recent.append(RecentCompletion(id: id, outcome: outcome, position: index.find(id)!, growths: index.growths))
            recentPayloadBytes += outcome?.payload.count ?? 0
            evictOldCompletions()
        }
        if let last = recent.indices.last, recent[last].id == id { recent[last].segment = segment }
    }

    /// Gives the item in `slot` a payload of its own instead of a slice of the frame it came
    /// in, before it settles somewhere it may stay long.
    mutating func ownPayload(_ slot: UInt32) {
        slots[Int(slot)].item.payload = Array(slots[Int(slot)].item.payload)[...]
    }

    private mutating func release(_ slot: UInt32) {
        // Drop the payload now; the slot's other fields are overwritten on reuse.
        slots[Int(slot)].item.payload = []
        if !lastErrors.isEmpty { lastErrors[slot] = nil }
        slots[Int(slot)].state = .free
        freeSlots.append(slot)
    }

    /// Why the item in `slot` last failed ("" when it has not).
    func lastError(_ slot: UInt32) -> String { lastErrors[slot] ?? "" }

    mutating func setLastError(_ slot: UInt32, _ text: String?) { lastErrors[slot] = text }

    // MARK: Leases

    /// Leases the item in `slot` to `record`'s worker, on its next attempt.
    mutating func lease(_ slot: UInt32, to record: inout Dispatcher.WorkerRecord) {
        slots[Int(slot)].item.deliveries += 1
        slots[Int(slot)].state = .leased
        slots[Int(slot)].worker = record.number
        link(slot, into: &record.leaseHead)
        record.leased += 1
    }

    /// Ends the lease of item `id` if `record`'s worker holds it on `attempt` (the fencing
    /// check every outcome and hand-back passes) and returns its slot; `nil` for anything stale.
    /// `position` is where the id is in the index, for ``complete(_:at:outcome:)`` right after.
    mutating func endLease(_ id: ItemID, attempt: UInt32, of record: inout Dispatcher.WorkerRecord) -> (slot: UInt32, position: Int)? {
        guard let position = index.locate(id) else { return nil }
        let value = index.value(at: position)
        guard value & Self.recentFlag == 0 else { return nil }
        let slot = UInt32(value)
        guard slots[Int(slot)].state == .leased, slots[Int(slot)].worker == record.number,
              slots[Int(slot)].item.deliveries == attempt else { return nil }
        unlink(slot, from: &record.leaseHead)
        record.leased -= 1
        return (slot, position)
    }

    /// Puts `slot` at the head of the lease list that starts at `head`.
    mutating func link(_ slot: UInt32, into head: inout UInt32) {
        slots[Int(slot)].previous = Self.none
        slots[Int(slot)].next = head
        if head != Self.none { slots[Int(head)].previous = slot }
        head = slot
    }

    /// Takes `slot` out of the lease list that starts at `head`.
    mutating func unlink(_ slot: UInt32, from head: inout UInt32) {
        let previous = slots[Int(slot)].previous, next = slots[Int(slot)].next
        if previous != Self.none { slots[Int(previous)].next = next } else { head = next }
        if next != Self.none { slots[Int(next)].previous = previous }
    }

    /// The slots of the lease list that starts at `head`.
    func leases(from head: UInt32) -> [UInt32] {
        var result: [UInt32] = []
        var current = head
        while current != Self.none {
            result.append(current)
            current = slots[Int(current)].next
        }
        return result
    }
}

extension ItemTable {
    struct RecentCompletion: Sendable {
        var id: ItemID
        var outcome: ItemOutcome?
        /// Where the id is in the index, as of its `growths`.
        var position: Int
        var growths: UInt32
        /// The journal segment holding its `completed` record (``ItemTable/noSegment``: none).
        var segment = ItemTable.noSegment
    }

    /// Where a held item is.
    enum State: UInt8, Sendable {
        case free
        case queued
        case leased
        case retrying
        case dead
    }

    /// One held item and where it is.
    struct Slot: Sendable {
        var item: Dispatcher.Item
        /// The producer waiting for its outcome (``ProducerTable`` number), or 0.
        var producer: UInt32
        var state = State.queued
        /// While leased: the worker's number. The lease's attempt is `item.deliveries`.
        var worker: UInt32 = 0
        var previous = ItemTable.none
        var next = ItemTable.none
    }
}
