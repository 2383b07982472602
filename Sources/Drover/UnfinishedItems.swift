import DroverProtocol

/// A producer's books: the items it still answers for, by input index, with their payloads
/// (kept to offer them again after a broker restart) and whether the broker has accepted them.
///
/// Entries live in reused slots found through an ``ItemIndex``, for the same reason as the
/// broker's books: every item is added, accepted and finished once, and a `Dictionary` hash
/// per step would cost more than the rest of the producer's work.
struct UnfinishedItems {
    struct Entry {
        var payload: [UInt8]
        var index: UInt64
        /// The broker has it (with `--wait`, the outcome is still to come).
        var accepted = false
    }

    private var slots: [Entry] = []
    private var freeSlots: [Int] = []
    private var positions = ItemIndex()

    var count: Int { positions.count }

    private static func key(_ index: UInt64) -> ItemID { ItemID(high: 0, low: index) }

    mutating func add(_ index: UInt64, payload: [UInt8]) {
        let entry = Entry(payload: payload, index: index)
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
            slots[slot] = entry
        } else {
            slot = slots.count
            slots.append(entry)
        }
        if positions.insertIfAbsent(Self.key(index), UInt64(slot)) != nil {
            preconditionFailure("item index \(index) added twice")
        }
    }

    subscript(index: UInt64) -> Entry? {
        positions[Self.key(index)].map { slots[Int($0)] }
    }

    /// Marks an item accepted; `false` when it is unknown or was already accepted.
    mutating func markAccepted(_ index: UInt64) -> Bool {
        guard let slot = positions[Self.key(index)].map(Int.init), !slots[slot].accepted else { return false }
        slots[slot].accepted = true
        return true
    }

    /// Forgets an item; returns it, or `nil` when it is unknown.
    @discardableResult
    mutating func remove(_ index: UInt64) -> Entry? {
        guard let slot = positions.remove(Self.key(index)).map(Int.init) else { return nil }
        let entry = slots[slot]
        slots[slot].payload = []
        freeSlots.append(slot)
        return entry
    }

    /// Every unfinished index, in input order, after marking each not accepted (a broker
    /// restart: everything is offered again).
    mutating func resetAcceptance() -> [UInt64] {
        var indices: [UInt64] = []
        indices.reserveCapacity(count)
        for slot in slots.indices where positions[Self.key(slots[slot].index)] == UInt64(slot) {
            slots[slot].accepted = false
            indices.append(slots[slot].index)
        }
        return indices.sorted()
    }

    mutating func removeAll() {
        slots.removeAll()
        freeSlots.removeAll()
        positions.removeAll()
    }
}
