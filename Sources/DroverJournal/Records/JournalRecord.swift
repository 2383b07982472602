import DroverProtocol

/// One entry of the broker's journal: a change to what the broker holds.
///
/// On disk each record is `length (u32) · crc32c (u32) · body`, little-endian, where `body` is
/// a type byte followed by the fields below and `length` counts the body. A record never
/// straddles two segments. Replaying the records of every segment in order rebuilds what the
/// broker held: see `Dispatcher.recover` for how each one is applied.
public enum JournalRecord: Sendable, Equatable {
    /// Items accepted into `queue`, with consecutive sequence numbers from `firstSequence`.
    case accepted(AcceptedItems)
    /// Items completed, each with the outcome kept for a producer that may resubmit (or none).
    case completed([CompletedItem])
    /// A delivery failed: the item waits to retry, or is dead when `dead`.
    case failed(FailedItem)
    /// Items put back on their queue without a failure (handed back, undelivered, or their
    /// worker left on purpose), with the deliveries made so far.
    case returned([ItemDeliveries])
    /// Dead items replayed: queued again, failures reset, with a new sequence number each.
    case replayed([ReplayedItem])
    /// Dead items purged: forgotten.
    case purged([ItemID])
    /// An item's whole state, copied forward from an old segment so that segment can go.
    case carried(CarriedItem)

    public enum Kind: UInt8, Sendable {
        case accepted = 1, completed, failed, returned, replayed, purged, carried
    }

    public struct AcceptedItems: Sendable, Equatable {
        public var queue: String
        public var timeoutMilliseconds: UInt32
        public var firstSequence: UInt64
        public var items: [(id: ItemID, payload: ArraySlice<UInt8>)]

        public init(queue: String, timeoutMilliseconds: UInt32, firstSequence: UInt64, items: [(id: ItemID, payload: ArraySlice<UInt8>)]) {
            self.queue = queue
            self.timeoutMilliseconds = timeoutMilliseconds
            self.firstSequence = firstSequence
            self.items = items
        }

        public static func == (a: Self, b: Self) -> Bool {
            a.queue == b.queue && a.timeoutMilliseconds == b.timeoutMilliseconds && a.firstSequence == b.firstSequence
                && a.items.count == b.items.count && zip(a.items, b.items).allSatisfy { $0.id == $1.id && $0.payload.elementsEqual($1.payload) }
        }
    }

    public struct CompletedItem: Sendable, Equatable {
        public var id: ItemID
        public var outcome: ItemOutcome?
        public init(id: ItemID, outcome: ItemOutcome?) {
            self.id = id
            self.outcome = outcome
        }
    }

    public struct FailedItem: Sendable, Equatable {
        public var id: ItemID
        public var deliveries: UInt32
        public var failures: UInt32
        public var dead: Bool
        public var error: String
        public init(id: ItemID, deliveries: UInt32, failures: UInt32, dead: Bool, error: String) {
            self.id = id
            self.deliveries = deliveries
            self.failures = failures
            self.dead = dead
            self.error = error
        }
    }

    public struct ItemDeliveries: Sendable, Equatable {
        public var id: ItemID
        public var deliveries: UInt32
        public init(id: ItemID, deliveries: UInt32) {
            self.id = id
            self.deliveries = deliveries
        }
    }

    public struct ReplayedItem: Sendable, Equatable {
        public var id: ItemID
        public var sequence: UInt64
        public init(id: ItemID, sequence: UInt64) {
            self.id = id
            self.sequence = sequence
        }
    }

    public struct CarriedItem: Sendable, Equatable {
        public enum State: UInt8, Sendable { case queued = 0, retrying = 1, dead = 2 }
        public var id: ItemID
        public var queue: String
        public var sequence: UInt64
        public var deliveries: UInt32
        public var failures: UInt32
        public var timeoutMilliseconds: UInt32
        public var state: State
        public var lastError: String
        public var payload: ArraySlice<UInt8>

        public init(id: ItemID, queue: String, sequence: UInt64, deliveries: UInt32, failures: UInt32,
                    timeoutMilliseconds: UInt32, state: State, lastError: String, payload: ArraySlice<UInt8>) {
            self.id = id
            self.queue = queue
            self.sequence = sequence
            self.deliveries = deliveries
            self.failures = failures
            self.timeoutMilliseconds = timeoutMilliseconds
            self.state = state
            self.lastError = lastError
            self.payload = payload
        }

        public static func == (a: Self, b: Self) -> Bool {
            a.id == b.id && a.queue == b.queue && a.sequence == b.sequence && a.deliveries == b.deliveries
                && a.failures == b.failures && a.timeoutMilliseconds == b.timeoutMilliseconds && a.state == b.state
                && a.lastError == b.lastError && a.payload.elementsEqual(b.payload)
        }
    }

    /// Bytes before a record's body: length and checksum.
    public static let headerBytes = 8
}

// MARK: Encoding

/// Appends records to a byte buffer.
struct RecordEncoder {
    var bytes: [UInt8]

    /// Starts a record of `kind`; returns where it starts, for ``finish(_:)``.
    mutating func begin(_ kind: JournalRecord.Kind) -> Int {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: JournalRecord.headerBytes))
        bytes.append(kind.rawValue)
        return start
    }

    /// Fills in the length and checksum of the record that starts at `start`.
    mutating func finish(_ start: Int) {
        let bodyStart = start + JournalRecord.headerBytes
        let length = UInt32(bytes.count - bodyStart)
        let crc = CRC32C.checksum(bytes[bodyStart...])
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: length.littleEndian, toByteOffset: start, as: UInt32.self)
            raw.storeBytes(of: crc.littleEndian, toByteOffset: start + 4, as: UInt32.self)
        }
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func id(_ v: ItemID) {
        u64(v.high)
        u64(v.low)
    }
    mutating func blob<C: Collection>(_ v: C) where C.Element == UInt8 {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
    mutating func text(_ v: String) { blob(v.utf8) }

    mutating func record(_ record: JournalRecord) {
        switch record {
        case .accepted(let a):
            let start = begin(.accepted)
            text(a.queue)
            u32(a.timeoutMilliseconds)
            u64(a.firstSequence)
            u32(UInt32(a.items.count))
            for item in a.items {
                id(item.id)
                blob(item.payload)
            }
            finish(start)
        case .completed(let items):
            let start = begin(.completed)
            u32(UInt32(items.count))
            for item in items {
                id(item.id)
                if let outcome = item.outcome {
                    u8(1 + outcome.status.rawValue)
                    u32(outcome.attempt)
                    blob(outcome.payload)
                } else {
                    u8(0)
                }
            }
            finish(start)
        case .failed(let f):
            let start = begin(.failed)
            id(f.id)
            u32(f.deliveries)
            u32(f.failures)
            u8(f.dead ? 1 : 0)
            text(f.error)
            finish(start)
        case .returned(let items):
            let start = begin(.returned)
            u32(UInt32(items.count))
            for item in items {
                id(item.id)
                u32(item.deliveries)
            }
            finish(start)
        case .replayed(let items):
            let start = begin(.replayed)
            u32(UInt32(items.count))
            for item in items {
                id(item.id)
                u64(item.sequence)
            }
            finish(start)
        case .purged(let ids):
            let start = begin(.purged)
            u32(UInt32(ids.count))
            for v in ids { id(v) }
            finish(start)
        case .carried(let c):
            let start = begin(.carried)
            id(c.id)
            text(c.queue)
            u64(c.sequence)
            u32(c.deliveries)
            u32(c.failures)
            u32(c.timeoutMilliseconds)
            u8(c.state.rawValue)
            text(c.lastError)
            blob(c.payload)
            finish(start)
        }
    }
}

// MARK: Decoding

/// Why a record could not be read.
public enum RecordProblem: Error, Sendable, Equatable {
    /// The body is shorter than its fields say, or has bytes left over.
    case malformed(String)
}

extension JournalRecord {
    /// Decodes a record's body (what follows its length and checksum), whatever the bytes: a
    /// malformed body throws ``RecordProblem``. The fuzzer's way in past the checksum.
    public static func decodeBody(_ body: ArraySlice<UInt8>) throws(RecordProblem) -> JournalRecord {
        try RecordDecoder.decode(body)
    }
}

/// Reads one record's body (after the header), whose checksum has been checked.
struct RecordDecoder {
    let bytes: ArraySlice<UInt8>
    var at: Int

    init(_ body: ArraySlice<UInt8>) {
        bytes = body
        at = body.startIndex
    }

    private mutating func take(_ n: Int, _ what: String) throws(RecordProblem) -> Range<Int> {
        guard n >= 0, bytes.endIndex - at >= n else { throw .malformed("\(what) runs past the end of the record") }
        defer { at += n }
        return at..<at + n
    }

    mutating func u8(_ what: String) throws(RecordProblem) -> UInt8 { bytes[try take(1, what).lowerBound] }
    mutating func u32(_ what: String) throws(RecordProblem) -> UInt32 {
        let r = try take(4, what)
        return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: r.lowerBound - bytes.startIndex, as: UInt32.self)) }
    }
    mutating func u64(_ what: String) throws(RecordProblem) -> UInt64 {
        let r = try take(8, what)
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: r.lowerBound - bytes.startIndex, as: UInt64.self)) }
    }
    mutating func id(_ what: String) throws(RecordProblem) -> ItemID {
        let high = try u64(what)
        return ItemID(high: high, low: try u64(what))
    }
    mutating func blob(_ what: String) throws(RecordProblem) -> ArraySlice<UInt8> {
        let n = try u32(what)
        return bytes[try take(Int(n), what)]
    }
    mutating func text(_ what: String) throws(RecordProblem) -> String {
        guard let s = String(validating: try blob(what), as: UTF8.self) else { throw .malformed("\(what) is not UTF-8") }
        return s
    }
    mutating func count(_ what: String, each: Int) throws(RecordProblem) -> Int {
        let n = Int(try u32(what))
        guard n * each <= bytes.endIndex - at else { throw .malformed("\(what) says \(n), more than the record holds") }
        return n
    }

    func end() throws(RecordProblem) {
        guard at == bytes.endIndex else { throw .malformed("\(bytes.endIndex - at) bytes left over at the end of the record") }
    }

    static func decode(_ body: ArraySlice<UInt8>) throws(RecordProblem) -> JournalRecord {
        var d = RecordDecoder(body)
        let type = try d.u8("the record type")
        guard let kind = JournalRecord.Kind(rawValue: type) else { throw .malformed("unknown record type \(type)") }
        let record: JournalRecord
        switch kind {
        case .accepted:
            let queue = try d.text("the queue name")
            let timeout = try d.u32("the time limit")
            let first = try d.u64("the first sequence number")
            let n = try d.count("the item count", each: 20)
            var items: [(id: ItemID, payload: ArraySlice<UInt8>)] = []
            items.reserveCapacity(n)
            for _ in 0..<n {
                let id = try d.id("an item id")
                items.append((id, try d.blob("an item payload")))
            }
            record = .accepted(.init(queue: queue, timeoutMilliseconds: timeout, firstSequence: first, items: items))
        case .completed:
            let n = try d.count("the item count", each: 17)
            var items: [JournalRecord.CompletedItem] = []
            items.reserveCapacity(n)
            for _ in 0..<n {
                let id = try d.id("an item id")
                let tag = try d.u8("an outcome tag")
                guard tag <= 2 else { throw .malformed("unknown outcome tag \(tag)") }
                var outcome: ItemOutcome?
                if tag > 0 {
                    let attempt = try d.u32("an attempt")
                    outcome = ItemOutcome(id: id, attempt: attempt, status: tag == 1 ? .succeeded : .failed, payload: Array(try d.blob("an outcome")))
                }
                items.append(.init(id: id, outcome: outcome))
            }
            record = .completed(items)
        case .failed:
            let id = try d.id("the item id")
            let deliveries = try d.u32("the deliveries")
            let failures = try d.u32("the failures")
            let dead = try d.u8("the dead flag")
            guard dead <= 1 else { throw .malformed("dead flag \(dead)") }
            record = .failed(.init(id: id, deliveries: deliveries, failures: failures, dead: dead == 1, error: try d.text("the error")))
        case .returned:
            let n = try d.count("the item count", each: 20)
            var items: [JournalRecord.ItemDeliveries] = []
            for _ in 0..<n {
                let id = try d.id("an item id")
                items.append(.init(id: id, deliveries: try d.u32("the deliveries")))
            }
            record = .returned(items)
        case .replayed:
            let n = try d.count("the item count", each: 24)
            var items: [JournalRecord.ReplayedItem] = []
            for _ in 0..<n {
                let id = try d.id("an item id")
                items.append(.init(id: id, sequence: try d.u64("a sequence number")))
            }
            record = .replayed(items)
        case .purged:
            let n = try d.count("the item count", each: 16)
            var ids: [ItemID] = []
            for _ in 0..<n { ids.append(try d.id("an item id")) }
            record = .purged(ids)
        case .carried:
            let id = try d.id("the item id")
            let queue = try d.text("the queue name")
            let sequence = try d.u64("the sequence number")
            let deliveries = try d.u32("the deliveries")
            let failures = try d.u32("the failures")
            let timeout = try d.u32("the time limit")
            let rawState = try d.u8("the state")
            guard let state = JournalRecord.CarriedItem.State(rawValue: rawState) else { throw .malformed("unknown item state \(rawState)") }
            let error = try d.text("the last error")
            record = .carried(.init(id: id, queue: queue, sequence: sequence, deliveries: deliveries, failures: failures,
                                    timeoutMilliseconds: timeout, state: state, lastError: error, payload: try d.blob("the payload")))
        }
        try d.end()
        return record
    }
}
