/// A producer's books: the items it still answers for, by input index, with their payloads
/// (kept to offer them again after a broker restart) and whether the broker has accepted them.
///
/// A producer numbers its items 0, 1, 2, … and they finish in about that order, so the books
/// are a ring addressed by index: adding, accepting and finishing an item are array accesses
/// in order, with no hashing. The ring grows up to `ringLimit` entries (twice the window);
/// an item still unfinished when the ring must move past it (one slow item among a great many
/// fast ones) moves to a dictionary of stragglers.
struct UnfinishedItems {
    struct Entry {
        var payload: [UInt8]
        var index: UInt64
        /// The broker has it (with `--wait`, the outcome is still to come).
        var accepted = false
    }

    private struct Place {
        var payload: [UInt8] = []
        var index: UInt64 = 0
        var present = false
        var accepted = false
    }

    private var ring: [Place]
    private var mask: Int
    /// The lowest index the ring covers; it covers `base ..< base + ring.count`.
    private var base: UInt64 = 0
    /// Unfinished items below `base`.
    private var stragglers: [UInt64: Entry] = [:]
    private let ringLimit: Int
    private(set) var count = 0
    /// Items marked accepted (with `--wait`, accepted and still waiting for their outcome).
    private(set) var acceptedCount = 0
    /// Entries in the ring (for tests).
    var ringSize: Int { ring.count }

    /// `window`: how many items the producer keeps unfinished at most.
    init(window: Int) {
        var limit = 1024
        while limit < window * 2 { limit *= 2 }
        ringLimit = limit
        ring = Array(repeating: Place(), count: 1024)
        mask = ring.count - 1
    }

    /// Adds the item numbered `index`; indices come in increasing order.
    mutating func add(_ index: UInt64, payload: [UInt8]) {
        precondition(index >= base, "item index \(index) added out of order")
        while index - base >= UInt64(ring.count) {
            let place = ring[Int(base) & mask]
            if place.present {
                if ring.count < ringLimit { grow(); continue }
                stragglers[place.index] = Entry(payload: place.payload, index: place.index, accepted: place.accepted)
                ring[Int(base) & mask] = Place()
            }
            base += 1
        }
        ring[Int(index) & mask] = Place(payload: payload, index: index, present: true)
        count += 1
    }

    subscript(index: UInt64) -> Entry? {
        if let position = position(index) {
            let place = ring[position]
            return Entry(payload: place.payload, index: index, accepted: place.accepted)
        }
        return stragglers[index]
    }

    /// Marks an item accepted; `false` when it is unknown or was already accepted.
    mutating func markAccepted(_ index: UInt64) -> Bool {
        if let position = position(index) {
            guard !ring[position].accepted else { return false }
            ring[position].accepted = true
            acceptedCount += 1
            return true
        }
        guard let entry = stragglers[index], !entry.accepted else { return false }
        stragglers[index]!.accepted = true
        acceptedCount += 1
        return true
    }

    /// Forgets an item; returns it, or `nil` when it is unknown.
    @discardableResult
    mutating func remove(_ index: UInt64) -> Entry? {
        if let position = position(index) {
            let place = ring[position]
            ring[position] = Place()
            count -= 1
            if place.accepted { acceptedCount -= 1 }
            return Entry(payload: place.payload, index: index, accepted: place.accepted)
        }
        guard let entry = stragglers.removeValue(forKey: index) else { return nil }
        count -= 1
        if entry.accepted { acceptedCount -= 1 }
        return entry
    }

    /// Every unfinished index, in input order, after marking each not accepted (a broker
    /// restart: everything is offered again).
    mutating func resetAcceptance() -> [UInt64] {
        var indices: [UInt64] = []
        indices.reserveCapacity(count)
        acceptedCount = 0
        for index in stragglers.keys {
            stragglers[index]!.accepted = false
            indices.append(index)
        }
        for position in ring.indices where ring[position].present {
            ring[position].accepted = false
            indices.append(ring[position].index)
        }
        return indices.sorted()
    }

    mutating func removeAll() {
        for position in ring.indices { ring[position] = Place() }
        stragglers.removeAll()
        base = 0
        count = 0
        acceptedCount = 0
    }

    /// Where `index` is in the ring, if it is there.
    private func position(_ index: UInt64) -> Int? {
        guard index >= base, index - base < UInt64(ring.count) else { return nil }
        let position = Int(index) & mask
        let place = ring[position]
        return place.present && place.index == index ? position : nil
    }

    private mutating func grow() {
        var larger = Array(repeating: Place(), count: ring.count * 2)
        let newMask = larger.count - 1
        for place in ring where place.present { larger[Int(place.index) & newMask] = place }
        ring = larger
        mask = newMask
    }
}
