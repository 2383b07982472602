import CDroverShims

/// Reads segments back: checks every record's length and checksum, tells a torn tail (the
/// last write cut short by a crash) from damage (anything else), and decodes the records.
public enum JournalReader {
    /// What is wrong with a segment.
    public enum Problem: Sendable, Equatable {
        /// The last segment ends in a record cut short (a crash during its write): the bytes
        /// from `offset` on are not a record and nothing valid follows. Recovery cuts them.
        case tornTail(offset: Int, bytes: Int)
        /// Damage: a bad record with data after it, a bad header, or stray bytes. Recovery
        /// stops; nothing is cut.
        case damaged(offset: Int, reason: String)
    }

    /// One segment read through.
    public struct Scan: Sendable {
        public var segment: UInt32
        /// Records and where each starts.
        public var records: [(offset: Int, record: JournalRecord)] = []
        /// Just past the last good record (where a cut goes).
        public var end: Int
        public var problem: Problem?
    }

    /// Reads `bytes`, the whole file of segment `number`; `isLast` when no newer segment exists
    /// (only there can a tail be torn). `maxRecordBytes` is the largest record a broker writes.
    public static func scan(_ bytes: [UInt8], segment number: UInt32, isLast: Bool, maxRecordBytes: Int) -> Scan {
        let headerBytes = JournalLog.segmentHeaderBytes
        let expected = JournalLog.segmentHeader(number)
        var scan = Scan(segment: number, end: 0)
        if bytes.count >= headerBytes && bytes[0..<headerBytes].elementsEqual(expected) {
            scan.end = headerBytes
            return read(bytes, into: &scan, isLast: isLast, maxRecordBytes: maxRecordBytes)
        }
        // The last segment's header cut short by a crash: a prefix of it, then only zeros.
        if isLast {
            guard let lastNonZero = lastNonZero(bytes[...]) else {
                scan.problem = .tornTail(offset: 0, bytes: 0)
                return scan
            }
            if lastNonZero < headerBytes && bytes[0...lastNonZero].elementsEqual(expected[0...lastNonZero]) {
                scan.problem = .tornTail(offset: 0, bytes: lastNonZero + 1)
                return scan
            }
        }
        scan.problem = .damaged(offset: 0, reason: "the segment header is not that of segment \(number) (wrong magic, number or checksum)")
        return scan
    }

    private static func read(_ bytes: [UInt8], into scan: inout Scan, isLast: Bool, maxRecordBytes: Int) -> Scan {
        var at = JournalLog.segmentHeaderBytes
        while true {
            if bytes.count - at < JournalRecord.headerBytes {
                if !isZero(bytes[at...]) { flag(&scan, at: at, bytes, isLast: isLast, "a record header cut short at the end of the file", claimedEnd: bytes.count) }
                return scan
            }
            let length = Int(load32(bytes, at))
            if length == 0 {
                // The end of the records: the rest of a preallocated segment is zeros.
                if let stray = firstNonZero(bytes[at...]) {
                    scan.problem = .damaged(offset: stray, reason: "bytes after the end of the records")
                }
                return scan
            }
            let bodyStart = at + JournalRecord.headerBytes
            let plausible = length <= maxRecordBytes && length <= bytes.count - bodyStart
            guard plausible else {
                flag(&scan, at: at, bytes, isLast: isLast, "a record length of \(length) bytes, more than a record can be", claimedEnd: bodyStart)
                return scan
            }
            let body = bytes[bodyStart..<bodyStart + length]
            guard CRC32C.checksum(body) == load32(bytes, at + 4) else {
                flag(&scan, at: at, bytes, isLast: isLast, "a record whose checksum does not match", claimedEnd: bodyStart + length)
                return scan
            }
            do {
                scan.records.append((at, try RecordDecoder.decode(body)))
            } catch {
                // The checksum matched, so these are the bytes that were written: not a torn write.
                if case .malformed(let why) = error { scan.problem = .damaged(offset: at, reason: "a record that cannot be read: \(why)") }
                return scan
            }
            at = bodyStart + length
            scan.end = at
        }
    }

    /// A bad record at `offset`: a torn tail if it is in the last segment and no valid record
    /// follows it (a write cut short leaves nothing after it), else damage. A flipped bit in a
    /// length field makes a record claim the ones after it; finding one of those intact tells
    /// the two apart.
    private static func flag(_ scan: inout Scan, at offset: Int, _ bytes: [UInt8], isLast: Bool, _ reason: String, claimedEnd: Int) {
        let end = (lastNonZero(bytes[offset...]) ?? offset) + 1
        if isLast, validRecord(in: bytes, after: offset, before: end) == nil {
            scan.problem = .tornTail(offset: offset, bytes: end - offset)
        } else {
            scan.problem = .damaged(offset: offset, reason: reason + (isLast ? ", with valid records after it" : ""))
        }
    }

    /// The first offset in (`start`, `end`) where a whole record with a matching checksum
    /// starts, if any.
    static func validRecord(in bytes: [UInt8], after start: Int, before end: Int) -> Int? {
        var at = start + 1
        while at + JournalRecord.headerBytes < end {
            let length = Int(load32(bytes, at))
            if length > 0, length <= end - at - JournalRecord.headerBytes,
               CRC32C.checksum(bytes[at + JournalRecord.headerBytes..<at + JournalRecord.headerBytes + length]) == load32(bytes, at + 4) {
                return at
            }
            at += 1
        }
        return nil
    }

    static func isZero(_ bytes: ArraySlice<UInt8>) -> Bool { firstNonZero(bytes) == nil }

    /// Where the first non-zero byte of `bytes` is (an index into `bytes`), if any.
    static func firstNonZero(_ bytes: ArraySlice<UInt8>) -> Int? {
        let offset = bytes.withUnsafeBytes { drover_first_nonzero($0.baseAddress, $0.count) }
        return offset == bytes.count ? nil : bytes.startIndex + offset
    }

    /// Where the last non-zero byte of `bytes` is (an index into `bytes`), if any.
    static func lastNonZero(_ bytes: ArraySlice<UInt8>) -> Int? {
        let end = bytes.withUnsafeBytes { drover_end_of_nonzero($0.baseAddress, $0.count) }
        return end == 0 ? nil : bytes.startIndex + end - 1
    }

    static func load32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }
}
