import DequeModule
import DroverProtocol

/// The broker loop's side of the journal: encodes records into segments and keeps the books
/// that say when a segment may go. Pure: it makes bytes (``takePending()``) that a
/// ``JournalStore`` writes; it does no I/O itself.
///
/// Positions: every byte appended since the broker started has a log position (``appended``
/// is the end). A producer may hear of an item once the journal has synced past the position
/// its record ended at.
///
/// Segment lifecycle: a segment is *live* while it holds the latest full record of an item the
/// broker still holds (its `accepted` or `carried` record) or the `completed` record of an id
/// still in the de-duplication window. Segments go oldest first (so a record about an item is
/// never kept while the item's own record is gone): when the oldest segment is not the one
/// being written and nothing in it is live, it is deleted, once the journal has synced what
/// was written up to that moment. A segment that stays live because of a few long-lived items
/// (dead letters, items waiting to retry) is compacted: the broker copies those items forward
/// (``needsCompaction``), and the segment drains.
public struct JournalLog: Sendable {
    /// Bytes written at once, at one place in one segment.
    public struct Chunk: Sendable {
        public var segment: UInt32
        public var offset: Int
        public var bytes: [UInt8]
        /// The chunk opens a new segment (the file must be made first).
        public var opensSegment: Bool
        /// The log position just past this chunk.
        public var end: UInt64
    }

    public static let segmentHeaderBytes = 32
    static let magic: [UInt8] = Array("DROVERJ1".utf8)

    /// Size of each segment file.
    public let segmentBytes: Int
    /// Largest record the broker writes: a batch of accepted items is split to stay under it.
    public var maxRecordBytes: Int { (segmentBytes - Self.segmentHeaderBytes) / 4 }

    /// The segment being written.
    public private(set) var currentSegment: UInt32
    /// The log position just past the last record appended.
    public private(set) var appended: UInt64 = 0
    /// Records appended since the broker started.
    public private(set) var recordsAppended = 0
    /// Where the last record appended starts and ends in ``currentSegment`` (so that the
    /// broker can find an item's payload there again).
    public private(set) var lastRecordStart = 0
    public private(set) var lastRecordEnd = 0
    /// The oldest segment that exists.
    public private(set) var oldestSegment: UInt32
    /// Per segment from the oldest: bytes of the records of live items and recent completions
    /// there, and of every such record ever placed there.
    private var live: Deque<Int>
    private var placed: Deque<Int>
    private var totalLive = 0
    private var totalPlaced = 0
    private var encoder = RecordEncoder(bytes: [])
    /// Where the chunk being encoded starts in ``currentSegment``.
    private var chunkOffset: Int
    private var chunkOpensSegment: Bool
    private var done: [Chunk] = []

    /// A log that continues the journal on disk: `oldestSegment` is the oldest segment there
    /// (nil when there are none), and new records go at `end` of `lastSegment` when given and
    /// there is room, else into a new segment after it.
    public init(segmentBytes: Int, oldestSegment oldest: UInt32?, lastSegment: UInt32?, lastSegmentEnd end: Int? = nil) {
        precondition(segmentBytes >= 4096, "a journal segment must be at least 4 KiB")
        self.segmentBytes = segmentBytes
        if let lastSegment, let end, end >= Self.segmentHeaderBytes, end < segmentBytes / 2 {
            currentSegment = lastSegment
            chunkOffset = end
            chunkOpensSegment = false
            encoder.bytes = []
            appended = 0
        } else {
            currentSegment = (lastSegment ?? 0) + 1
            chunkOffset = 0
            chunkOpensSegment = true
            encoder.bytes = Self.segmentHeader(currentSegment)
            appended = UInt64(Self.segmentHeaderBytes)
        }
        oldestSegment = oldest ?? currentSegment
        let count = Int(currentSegment - oldestSegment) + 1
        live = Deque(repeating: 0, count: count)
        placed = Deque(repeating: 0, count: count)
    }

    /// The first bytes of segment `number`: magic, number, checksum.
    static func segmentHeader(_ number: UInt32) -> [UInt8] {
        var e = RecordEncoder(bytes: magic)
        e.u32(number)
        e.bytes += [UInt8](repeating: 0, count: segmentHeaderBytes - 4 - e.bytes.count)
        e.u32(CRC32C.checksum(e.bytes))
        return e.bytes
    }

    // MARK: Appending

    /// Appends `record`; returns the segment it went into.
    @discardableResult
    public mutating func append(_ record: JournalRecord) -> UInt32 {
        let start = encoder.bytes.count
        encoder.record(record)
        return placeRecord(from: start)
    }

    /// Appends an `accepted` record for `count` items without building a ``JournalRecord``:
    /// `item(i)` gives the i-th. Keep the record under ``maxRecordBytes``.
    public mutating func appendAccepted(queue: String, timeoutMilliseconds: UInt32, firstSequence: UInt64, count: Int,
                                        item: (Int) -> (ItemID, ArraySlice<UInt8>)) -> UInt32 {
        let start = encoder.begin(.accepted)
        encoder.text(queue)
        encoder.u32(timeoutMilliseconds)
        encoder.u64(firstSequence)
        encoder.u32(UInt32(count))
        for i in 0..<count {
            let (id, payload) = item(i)
            encoder.id(id)
            encoder.blob(payload)
        }
        encoder.finish(start)
        return placeRecord(from: start)
    }

    /// Where the first item's entry starts in an `accepted` record for `queue`, from the record's
    /// start (the header, type, queue, time limit, first sequence and count before it). An
    /// item's payload follows its entry's 16-byte id and 4-byte length.
    public static func acceptedItemsOffset(queue: String) -> Int { JournalRecord.headerBytes + 1 + 4 + queue.utf8.count + 4 + 8 + 4 }

    /// Bytes an `accepted` record takes for items of these payload sizes (for splitting batches).
    public static func acceptedBytes(queue: String, payloadBytes: Int, count: Int) -> Int {
        JournalRecord.headerBytes + 1 + 4 + queue.utf8.count + 4 + 8 + 4 + count * 20 + payloadBytes
    }

    /// Moves the record just encoded (from `start`) to a new segment if it does not fit.
    private mutating func placeRecord(from start: Int) -> UInt32 {
        recordsAppended += 1
        let end = encoder.bytes.count
        if chunkOffset + end > segmentBytes {
            precondition(end - start <= segmentBytes - Self.segmentHeaderBytes, "a journal record larger than a segment")
            let record = encoder.bytes[start..<end]
            encoder.bytes.removeSubrange(start...)
            closeChunk()
            currentSegment += 1
            nextSegmentReady = false
            live.append(0)
            placed.append(0)
            chunkOffset = 0
            chunkOpensSegment = true
            encoder.bytes = Self.segmentHeader(currentSegment) + record
            appended += UInt64(Self.segmentHeaderBytes)
        }
        appended += UInt64(end - start)
        lastRecordEnd = chunkOffset + encoder.bytes.count
        lastRecordStart = lastRecordEnd - (end - start)
        return currentSegment
    }

    private mutating func closeChunk() {
        guard !encoder.bytes.isEmpty else { return }
        done.append(Chunk(segment: currentSegment, offset: chunkOffset, bytes: encoder.bytes,
                          opensSegment: chunkOpensSegment, end: appended))
        chunkOffset += encoder.bytes.count
        chunkOpensSegment = false
        encoder.bytes = []
    }

    /// The bytes appended since the last call, to write in order.
    public mutating func takePending() -> [Chunk] {
        // The header of a segment with no record yet waits until it has one.
        if hasOpenRecords { closeChunk() }
        defer { done.removeAll(keepingCapacity: true) }
        return done
    }

    /// Whether the segment after the current one is made and its space reserved (the broker
    /// sets it; moving into that segment clears it).
    public var nextSegmentReady = false

    /// Whether `bytes` more of records fit in the space already reserved (the rest of this
    /// segment, and the next when it is ready) while leaving half a segment for records about
    /// items already held (outcomes, retries, dead letters): new items are accepted only then,
    /// so a full disk never stops the broker from recording what happens to what it holds.
    public func canAccept(bytes: Int) -> Bool {
        let room = (segmentBytes - currentSegmentFill) + (nextSegmentReady ? segmentBytes - Self.segmentHeaderBytes : 0)
        return bytes + segmentBytes / 2 <= room
    }

    /// Bytes used in the segment being written (records appended included).
    public var currentSegmentFill: Int { chunkOffset + encoder.bytes.count }

    /// Whether anything was appended and not yet taken.
    public var hasPending: Bool { !done.isEmpty || hasOpenRecords }

    /// Whether the chunk being encoded holds a record (not only a new segment's header).
    private var hasOpenRecords: Bool {
        !encoder.bytes.isEmpty && !(chunkOpensSegment && encoder.bytes.count == Self.segmentHeaderBytes)
    }

    // MARK: Segment books

    /// A held item's record (or a recent completion's) of about `bytes` is now in `segment`.
    /// The books count bytes, so that a segment kept by a few small records is compacted.
    public mutating func retain(_ segment: UInt32, bytes count: Int) {
        let i = Int(segment - oldestSegment)
        live[i] += count
        placed[i] += count
        totalLive += count
        totalPlaced += count
    }

    /// A held item (or a recent completion) whose record of `bytes` is in `segment` is gone.
    public mutating func release(_ segment: UInt32, bytes count: Int) {
        guard segment >= oldestSegment else { return }
        live[Int(segment - oldestSegment)] -= count
        totalLive -= count
    }

    /// Bytes of live items' and completions' records in `segment`.
    public func liveBytes(_ segment: UInt32) -> Int {
        guard segment >= oldestSegment, segment <= currentSegment else { return 0 }
        return live[Int(segment - oldestSegment)]
    }

    /// Segments that exist, oldest first (the current one may not be on disk yet).
    public var segmentCount: Int { live.count }

    /// Takes the oldest segments that hold nothing live: delete them once the journal has
    /// synced up to ``appended``.
    public mutating func takeDrained() -> [UInt32] {
        var drained: [UInt32] = []
        while oldestSegment < currentSegment, live.first == 0 {
            drained.append(oldestSegment)
            live.removeFirst()
            totalPlaced -= placed.removeFirst()
            oldestSegment += 1
        }
        return drained
    }

    /// The oldest segment, when it should be compacted: its live items copied forward
    /// (`carried`) so that it drains. Either few items keep it (and every newer segment behind
    /// it) on disk: under a sixteenth of what was placed there, with at least two newer
    /// segments; or the journal holds more than twice what is live across four or more
    /// segments (a queue nobody serves leaves a little in every segment).
    public var needsCompaction: UInt32? {
        guard live.count >= 3, let first = live.first, first > 0 else { return nil }
        if first * 16 <= placed.first! { return oldestSegment }
        if live.count >= 4 && totalLive * 2 <= totalPlaced && first * 2 <= placed.first! { return oldestSegment }
        return nil
    }
}
