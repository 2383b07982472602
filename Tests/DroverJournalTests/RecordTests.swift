import DroverProtocol
import Testing
@testable import DroverJournal

@Suite("Journal records: encoding, checksums, torn tails and damage")
struct RecordTests {
    static let sample: [JournalRecord] = [
        .accepted(.init(queue: "q", timeoutMilliseconds: 500, firstSequence: 7,
                        items: [(ItemID(high: 1, low: 2), Array("hello".utf8)[...]), (ItemID(high: 1, low: 3), [][...])])),
        .completed([.init(id: ItemID(high: 1, low: 2), outcome: ItemOutcome(id: ItemID(high: 1, low: 2), attempt: 3, status: .succeeded,
                                                                            payload: Array("HELLO".utf8))),
                    .init(id: ItemID(high: 1, low: 3), outcome: nil)]),
        .failed(.init(id: ItemID(high: 1, low: 4), deliveries: 2, failures: 1, dead: false, error: "exit status 1")),
        .failed(.init(id: ItemID(high: 1, low: 4), deliveries: 5, failures: 5, dead: true, error: "ünïcode")),
        .returned([.init(id: ItemID(high: 1, low: 5), deliveries: 9)]),
        .replayed([.init(id: ItemID(high: 1, low: 4), sequence: 99)]),
        .purged([ItemID(high: 1, low: 6), ItemID(high: 1, low: 7)]),
        .carried(.init(id: ItemID(high: 1, low: 8), queue: "other", sequence: 3, deliveries: 4, failures: 2, timeoutMilliseconds: 0,
                       state: .dead, lastError: "boom", payload: [0, 1, 2, 255][...])),
    ]

    /// A segment holding `records`, as a broker writes it (preallocated: zeros after them).
    static func segment(_ records: [JournalRecord], size: Int = 1 << 16) -> (bytes: [UInt8], ends: [Int]) {
        var log = JournalLog(segmentBytes: size, oldestSegment: nil, lastSegment: nil)
        var ends: [Int] = []
        var bytes: [UInt8] = []
        for record in records {
            log.append(record)
            for chunk in log.takePending() {
                if bytes.count < chunk.offset + chunk.bytes.count { bytes += [UInt8](repeating: 0, count: chunk.offset + chunk.bytes.count - bytes.count) }
                bytes.replaceSubrange(chunk.offset..<chunk.offset + chunk.bytes.count, with: chunk.bytes)
            }
            ends.append(bytes.count)
        }
        return (bytes + [UInt8](repeating: 0, count: size - bytes.count), ends)
    }

    @Test("every record reads back as written")
    func roundTrip() {
        let (bytes, _) = Self.segment(Self.sample)
        let scan = JournalReader.scan(bytes, segment: 1, isLast: true, maxRecordBytes: 1 << 20)
        #expect(scan.problem == nil)
        #expect(scan.records.map(\.record) == Self.sample)
    }

    @Test("CRC32C matches the standard check value, in hardware and table alike")
    func checksum() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    }

    @Test("a cut at every byte of the last 64 records: the whole records before it are kept, counted exactly, never more")
    func truncationEverywhere() {
        var records: [JournalRecord] = []
        for i in 0..<64 { records.append(Self.sample[i % Self.sample.count]) }
        let (full, ends) = Self.segment(records)
        let used = ends.last!
        for cut in JournalLog.segmentHeaderBytes..<used {
            // A torn write: bytes up to `cut` reached the disk, the rest of the segment is zeros.
            var bytes = full
            for i in cut..<used { bytes[i] = 0 }
            let scan = JournalReader.scan(bytes, segment: 1, isLast: true, maxRecordBytes: 1 << 20)
            // Whole records: those whose every byte survived (bytes that were zeros anyway
            // survive a cut too).
            let whole = ends.lastIndex { end in end <= cut || full[cut..<end].allSatisfy { $0 == 0 } }.map { $0 + 1 } ?? 0
            #expect(scan.records.count == whole, "cut at \(cut)")
            if case .damaged(let offset, let reason)? = scan.problem { Issue.record("cut at \(cut): damage at \(offset): \(reason)") }
            if ends.contains(cut) { #expect(scan.problem == nil, "cut at a record boundary \(cut)") }
        }
    }

    @Test("a flipped bit anywhere: the records before it are kept and the rest refused with its offset, or a torn last record is cut")
    func bitFlips() {
        var records: [JournalRecord] = []
        for i in 0..<24 { records.append(Self.sample[i % Self.sample.count]) }
        let size = 1 << 13
        let (full, ends) = Self.segment(records, size: size)
        var random = Lehmer(state: 99)
        for _ in 0..<2000 {
            let position = Int(random.next() % UInt64(size))
            var bytes = full
            bytes[position] ^= 1 << UInt8(random.next() % 8)
            for isLast in [true, false] {
                let scan = JournalReader.scan(bytes, segment: 1, isLast: isLast, maxRecordBytes: 1 << 20)
                // Records wholly before the flip must all be there; none may be read past it
                // without a problem reported.
                let before = ends.filter { $0 <= position }.count
                let startOfDamaged = before == 0 ? JournalLog.segmentHeaderBytes : ends[before - 1]
                switch scan.problem {
                case nil:
                    Issue.record("a flip at \(position) (isLast \(isLast)) went unnoticed")
                case .damaged(let offset, _)?:
                    #expect(scan.records.count == before || position < JournalLog.segmentHeaderBytes)
                    #expect(offset <= max(position, startOfDamaged))
                case .tornTail(let offset, _)?:
                    // Only the last record of the last segment can look torn.
                    #expect(isLast)
                    #expect(scan.records.count == records.count - 1 && offset == ends[ends.count - 2] || position >= ends.last!,
                            "a flip at \(position) cut as a torn tail at \(offset)")
                }
                if position >= ends.last! {
                    // In the zeros after the records: stray bytes, refused.
                    if case .damaged = scan.problem {} else if case .tornTail = scan.problem {} else { Issue.record("stray byte at \(position) unnoticed") }
                }
            }
        }
    }

    /// A small seeded generator (a Lehmer 64-bit multiplier), so the flips repeat run to run.
    struct Lehmer {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 0xDA94_2042_E4DD_58B5 &+ 1
            return state >> 11
        }
    }
}
