import DroverProtocol

/// A hash table from ``ItemID`` to a 64-bit value: the part of ``ItemIndex`` that takes any id,
/// and its table of pages.
///
/// Why not `Dictionary`: its SipHash of a 16-byte key costs more than everything else a broker
/// does with an item. Ids are hashed here with a multiply-xorshift mix keyed by a random seed
/// per table (see `hash(_:)`), so a producer cannot choose ids that collide without knowing
/// the seed.
///
/// The layout, after the "Swiss table" and F14 designs:
/// - Buckets come in aligned chunks of 8. Ids that differ only in the last 3 bits of `low` (a
///   producer numbers its items, so those are neighbours in time) share a home chunk: the
///   broker meets ids in about the order they were made, so consecutive lookups hit the same
///   few cache lines.
/// - Each chunk has 8 one-byte tags (0 for an empty bucket, else 7 bits of the id with the top
///   bit set), compared all at once as one 64-bit word: a probe reads an entry only when its
///   tag matches.
/// - A full chunk passes new ids on to the next chunk, and counts them in its `overflow`; a
///   lookup stops at the first chunk whose count is 0. Removal clears the tag and walks back
///   from the home chunk lowering those counts, so nothing moves, there are no tombstones, and
///   lookups do not slow down as items come and go.
/// Grows at 3/4 full (the memory scenario's budget allows no more); never shrinks.
struct IDHashTable: Sendable {
    private struct Entry {
        var high: UInt64
        var low: UInt64
        var value: UInt64
    }

    private static let minimumChunks = 8
    private static let lows: UInt64 = 0x0101_0101_0101_0101
    private static let highs: UInt64 = 0x8080_8080_8080_8080

    /// A chunk's tags and overflow count, side by side: an unsuccessful lookup (every new id)
    /// reads both, and this way that is one cache miss.
    private struct Chunk {
        var tags: UInt64 = 0
        var overflow: UInt32 = 0
    }

    private var entries: [Entry]
    private var chunks: [Chunk]
    private var chunkMask: Int
    private let seed: UInt64
    private(set) var count = 0
    /// How many times the table has grown: a position kept from before a growth is stale.
    private(set) var growths: UInt32 = 0

    /// Every id is hashed with `seed`, never by its value alone: consecutive ids (a producer
    /// numbers its items) would otherwise fill one run of chunks.
    init(seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.seed = seed | 1
        (entries, chunks) = Self.storage(chunks: Self.minimumChunks)
        chunkMask = Self.minimumChunks - 1
    }

    private static func storage(chunks: Int) -> ([Entry], [Chunk]) {
        (Array(repeating: Entry(high: 0, low: 0, value: 0), count: chunks * 8), Array(repeating: Chunk(), count: chunks))
    }

    /// Where `id` is, if present: pass the position to ``value(at:)``, ``setValue(_:at:)`` or
    /// ``remove(at:)`` before changing the table in any other way.
    func find(_ id: ItemID) -> Int? {
        let h = hash(id)
        let pattern = Self.lows &* UInt64(Self.tag(id, h))
        var chunk = Int(truncatingIfNeeded: h) & chunkMask
        while true {
            let meta = chunks[chunk]
            var matches = Self.zeroBytes(meta.tags ^ pattern)
            while matches != 0 {
                let position = chunk << 3 | matches.trailingZeroBitCount >> 3
                let entry = entries[position]
                if entry.low == id.low && entry.high == id.high { return position }
                matches &= matches &- 1
            }
            if meta.overflow == 0 { return nil }
            chunk = (chunk + 1) & chunkMask
        }
    }

    subscript(id: ItemID) -> UInt64? { find(id).map { entries[$0].value } }

    func value(at position: Int) -> UInt64 { entries[position].value }

    mutating func setValue(_ value: UInt64, at position: Int) {
        entries[position].value = value
    }

    /// Stores `value` for `id` unless `id` is present; returns the present value, or `nil`
    /// when it was stored.
    mutating func insertIfAbsent(_ id: ItemID, _ value: UInt64) -> UInt64? {
        if let position = find(id) { return entries[position].value }
        if (count + 1) * 4 > entries.count * 3 { grow() }
        place(id, value, hash(id))
        return nil
    }

    /// Removes `id`; returns its value.
    @discardableResult
    mutating func remove(_ id: ItemID) -> UInt64? {
        guard let position = find(id) else { return nil }
        let value = entries[position].value
        remove(at: position)
        return value
    }

    /// Removes the entry at `position` (from ``find(_:)``); nothing else moves.
    mutating func remove(at position: Int) {
        remove(at: position, id: ItemID(high: entries[position].high, low: entries[position].low))
    }

    /// Removes `id`, which is at `position` (kept from ``find(_:)`` with no growth since, see
    /// ``growths``): the entry itself is not read, so a cold one costs no cache miss.
    mutating func remove(at position: Int, id: ItemID) {
        assert(entries[position].high == id.high && entries[position].low == id.low)
        let chunk = position >> 3
        chunks[chunk].tags &= ~(0xFF << UInt64((position & 7) << 3))
        var passed = Int(truncatingIfNeeded: hash(id)) & chunkMask
        while passed != chunk {
            chunks[passed].overflow -= 1
            passed = (passed + 1) & chunkMask
        }
        count -= 1
    }

    var isEmpty: Bool { count == 0 }

    // MARK: Hashing and placing

    /// The seeded hash of everything but the last 3 bits of `low`: ids made together share it,
    /// and so their home chunk.
    private func hash(_ id: ItemID) -> UInt64 {
        var h = (id.high ^ seed) &* 0x9E37_79B9_7F4A_7C15
        h ^= ((id.low >> 3) &+ seed) &* 0xC2B2_AE3D_27D4_EB4F
        h ^= h >> 31
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 29
        return h
    }

    /// The id's tag byte: top bit set, the last 3 bits of `low` (so ids made together have
    /// distinct tags), and 4 bits of the hash that the chunk number does not use.
    private static func tag(_ id: ItemID, _ h: UInt64) -> UInt8 {
        0x80 | UInt8(truncatingIfNeeded: h >> 57) & 0x78 | UInt8(truncatingIfNeeded: id.low & 7)
    }

    /// A byte with its top bit set for every zero byte of `x` (and possibly for a byte after
    /// one; callers check the entry).
    private static func zeroBytes(_ x: UInt64) -> UInt64 { (x &- lows) & ~x & highs }

    /// Puts an id known to be absent into its home chunk, or the first chunk after it with room.
    private mutating func place(_ id: ItemID, _ value: UInt64, _ h: UInt64) {
        var chunk = Int(truncatingIfNeeded: h) & chunkMask
        while true {
            let free = ~chunks[chunk].tags & Self.highs
            if free != 0 {
                // The bucket numbered by the id's last 3 bits if it is free, else the first free.
                let preferred = Int(id.low & 7)
                let slot = free >> UInt64(preferred << 3 | 7) & 1 != 0 ? preferred : free.trailingZeroBitCount >> 3
                entries[chunk << 3 | slot] = Entry(high: id.high, low: id.low, value: value)
                chunks[chunk].tags |= UInt64(Self.tag(id, h)) << UInt64(slot << 3)
                count += 1
                return
            }
            chunks[chunk].overflow += 1
            chunk = (chunk + 1) & chunkMask
        }
    }

    private mutating func grow() {
        let (oldEntries, oldChunks) = (entries, chunks)
        let count = chunks.count * 2
        growths &+= 1
        (entries, chunks) = Self.storage(chunks: count)
        chunkMask = count - 1
        self.count = 0
        for position in oldEntries.indices where oldChunks[position >> 3].tags >> UInt64((position & 7) << 3) & 0x80 != 0 {
            let entry = oldEntries[position]
            let id = ItemID(high: entry.high, low: entry.low)
            place(id, entry.value, hash(id))
        }
    }
}
