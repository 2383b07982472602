import DroverProtocol

/// A hash table from ``ItemID`` to a 64-bit value, for the books that every item passes through
/// (the broker's item table, the producer's unfinished items).
///
/// Why not `Dictionary`: its SipHash of a 16-byte key costs more than everything else a broker
/// does with an item. Ids are hashed here with a multiply-xorshift mix keyed by a random seed
/// per table (see `bucket(_:)`), so a producer cannot choose ids that collide without knowing
/// the seed. Open addressing with linear probing keeps an entry's key and value in one 24-byte
/// record (one cache miss per lookup); removal shifts later entries back, so there are no
/// tombstones and lookups never slow down as items come and go. Grows at 3/4 full (growing at
/// half full measured no faster and costs up to twice the memory); never shrinks.
struct ItemIndex: Sendable {
    private struct Entry {
        var high: UInt64
        var low: UInt64
        var value: UInt64
    }

    /// Marks an empty bucket; the one value that cannot be stored.
    static let emptyValue = UInt64.max
    private static let minimumCapacity = 64

    private var entries: [Entry]
    private var mask: Int
    private let seed: UInt64
    private(set) var count = 0

    /// Every id is hashed with `seed`, never by its value alone: consecutive ids (a producer
    /// numbers its items) would otherwise fill one run of buckets, and removing from the
    /// middle of a run scans to its end.
    init(seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.seed = seed | 1
        entries = Array(repeating: Entry(high: 0, low: 0, value: Self.emptyValue), count: Self.minimumCapacity)
        mask = Self.minimumCapacity - 1
    }

    /// Where `id` is, if present: pass the position to ``value(at:)``, ``setValue(_:at:)`` or
    /// ``remove(at:)`` before changing the table in any other way.
    func find(_ id: ItemID) -> Int? {
        var position = bucket(id)
        while true {
            let entry = entries[position]
            if entry.value == Self.emptyValue { return nil }
            if entry.high == id.high && entry.low == id.low { return position }
            position = (position + 1) & mask
        }
    }

    subscript(id: ItemID) -> UInt64? { find(id).map { entries[$0].value } }

    func value(at position: Int) -> UInt64 { entries[position].value }

    mutating func setValue(_ value: UInt64, at position: Int) {
        precondition(value != Self.emptyValue)
        entries[position].value = value
    }

    /// Stores `value` for `id` unless `id` is present; returns the present value, or `nil`
    /// when it was stored.
    mutating func insertIfAbsent(_ id: ItemID, _ value: UInt64) -> UInt64? {
        precondition(value != Self.emptyValue)
        if (count + 1) * 4 > entries.count * 3 { grow() }
        var position = bucket(id)
        while true {
            let entry = entries[position]
            if entry.value == Self.emptyValue {
                entries[position] = Entry(high: id.high, low: id.low, value: value)
                count += 1
                return nil
            }
            if entry.high == id.high && entry.low == id.low { return entry.value }
            position = (position + 1) & mask
        }
    }

    /// Removes `id`; returns its value.
    @discardableResult
    mutating func remove(_ id: ItemID) -> UInt64? {
        guard let position = find(id) else { return nil }
        let value = entries[position].value
        remove(at: position)
        return value
    }

    /// Removes the entry at `position` (from ``find(_:)``), moving back any later entry of the
    /// same probe run that would otherwise become unreachable.
    mutating func remove(at position: Int) {
        var hole = position
        var next = (hole + 1) & mask
        while entries[next].value != Self.emptyValue {
            let home = bucket(ItemID(high: entries[next].high, low: entries[next].low))
            // The entry at `next` may fill the hole unless its home lies cyclically in (hole, next].
            if (next - home) & mask >= (next - hole) & mask {
                entries[hole] = entries[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        entries[hole].value = Self.emptyValue
        count -= 1
    }

    /// Stores `value` for `id`, replacing any value it had.
    mutating func set(_ id: ItemID, _ value: UInt64) {
        if insertIfAbsent(id, value) != nil { setValue(value, at: find(id)!) }
    }

    /// Every id and its value, in no particular order.
    func map<T>(_ transform: (ItemID, UInt64) -> T) -> [T] {
        entries.compactMap { $0.value == Self.emptyValue ? nil : transform(ItemID(high: $0.high, low: $0.low), $0.value) }
    }

    var isEmpty: Bool { count == 0 }

    mutating func removeAll() {
        for index in entries.indices { entries[index].value = Self.emptyValue }
        count = 0
    }

    /// Ids that differ only in the last 3 bits of `low` (a producer numbers its items, so
    /// those are neighbours in time) share an aligned block of 8 buckets, in order: the broker
    /// meets ids in about the order they were made, so consecutive lookups hit the same few
    /// cache lines. Which block is decided by the seeded hash of everything else.
    private func bucket(_ id: ItemID) -> Int {
        var h = (id.high ^ seed) &* 0x9E37_79B9_7F4A_7C15
        h ^= ((id.low >> 3) &+ seed) &* 0xC2B2_AE3D_27D4_EB4F
        h ^= h >> 31
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 29
        return Int(truncatingIfNeeded: h << 3 | (id.low & 7)) & mask
    }

    private mutating func grow() {
        let old = entries
        entries = Array(repeating: Entry(high: 0, low: 0, value: Self.emptyValue), count: old.count * 2)
        mask = entries.count - 1
        for entry in old where entry.value != Self.emptyValue {
            var position = bucket(ItemID(high: entry.high, low: entry.low))
            while entries[position].value != Self.emptyValue { position = (position + 1) & mask }
            entries[position] = entry
        }
    }
}
