import DroverProtocol

/// The deliveries a worker holds (queued in its pool or running), in as many numbered slots as
/// it has credit. A job carries its slot number to the handler thread and its outcome brings
/// it back, so finishing an item is an array access, not a hash of its id.
struct HeldItems {
    private struct Entry {
        var id = ItemID(high: 0, low: 0)
        var attempt: UInt32 = 0
        var held = false
    }

    private var entries: [Entry]
    private var freeSlots: [UInt32]
    private(set) var count = 0

    init(capacity: Int) {
        entries = Array(repeating: Entry(), count: capacity)
        freeSlots = (0..<UInt32(capacity)).reversed()
    }

    var isEmpty: Bool { count == 0 }

    /// Takes a free slot for `delivery`; `nil` when every slot is held.
    mutating func hold(_ delivery: Delivery) -> UInt32? {
        guard let slot = freeSlots.popLast() else { return nil }
        entries[Int(slot)] = Entry(id: delivery.id, attempt: delivery.attempt, held: true)
        count += 1
        return slot
    }

    /// Frees `slot` if it still holds this delivery; `false` when it does not (the item was
    /// already handed back, say at the drain deadline).
    @discardableResult
    mutating func release(_ slot: UInt32, id: ItemID, attempt: UInt32) -> Bool {
        let entry = entries[Int(slot)]
        guard entry.held, entry.attempt == attempt, entry.id == id else { return false }
        entries[Int(slot)].held = false
        freeSlots.append(slot)
        count -= 1
        return true
    }

    /// Every held delivery, in slot order.
    var all: [DeliveryRef] {
        entries.compactMap { $0.held ? DeliveryRef(id: $0.id, attempt: $0.attempt) : nil }
    }

    mutating func removeAll() {
        for slot in entries.indices where entries[slot].held {
            entries[slot].held = false
            freeSlots.append(UInt32(slot))
        }
        count = 0
    }
}

/// A delivery on its way to a handler thread, with the slot it holds in ``HeldItems``.
struct HeldJob: Sendable {
    let slot: UInt32
    let delivery: Delivery
}

/// An outcome on its way back to the I/O thread, with the slot to free and how long the item
/// took its handler thread (for the lookahead).
struct FinishedJob: Sendable {
    let slot: UInt32
    let outcome: ItemOutcome
    var microseconds: UInt32 = 0
}
