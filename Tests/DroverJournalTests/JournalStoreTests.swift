import DroverProtocol
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import DroverJournal

@Suite("Journal store: group commit, failures, segments made ahead")
struct JournalStoreTests {
    func accepted(_ n: UInt64) -> JournalRecord {
        .accepted(.init(queue: "q", timeoutMilliseconds: 0, firstSequence: n, items: [(ItemID(high: 1, low: n), Array("item \(n)".utf8)[...])]))
    }

    @Test("one sync covers every record written before it; nothing is synced until it returns")
    func groupCommit() throws {
        let fs = SimulatedFileSystem()
        let store = JournalStore(directory: "/d", fileSystem: fs, segmentBytes: 1 << 16)
        var log = JournalLog(segmentBytes: 1 << 16, oldestSegment: nil, lastSegment: nil)
        for n in 0..<5 as Range<UInt64> { log.append(accepted(n)) }
        try store.write(log.takePending(), acceptedItems: 5)
        #expect(store.synced == 0)
        #expect(store.syncNow())
        #expect(store.synced == store.written)
        #expect(store.stats.syncs == 1 && store.stats.itemsSynced == 5)
        // What a power cut keeps now: all five.
        fs.crash()
        var records = 0
        _ = try JournalStore(directory: "/d", fileSystem: fs, segmentBytes: 1 << 16).recover(maxRecordBytes: 1 << 20) { _, _ in records += 1 }
        #expect(records == 5)
    }

    @Test("a failed fdatasync is final: the position stays where it was and the failure is kept, never retried into success")
    func failedSyncIsFinal() throws {
        let fs = SimulatedFileSystem()
        let store = JournalStore(directory: "/d", fileSystem: fs, segmentBytes: 1 << 16)
        var log = JournalLog(segmentBytes: 1 << 16, oldestSegment: nil, lastSegment: nil)
        log.append(accepted(1))
        try store.write(log.takePending(), acceptedItems: 1)
        fs.failNext = ("sync", EIO)
        #expect(!store.syncNow())
        #expect(store.synced == 0)
        #expect(store.failure?.code == EIO)
        #expect(store.failure?.description.contains("Input/output error") == true)
    }

    @Test("a segment made ahead and never written is ignored (and removed) by recovery; a full disk shows when it is made")
    func preparedSegments() throws {
        let fs = SimulatedFileSystem()
        let store = JournalStore(directory: "/d", fileSystem: fs, segmentBytes: 1 << 16)
        var log = JournalLog(segmentBytes: 1 << 16, oldestSegment: nil, lastSegment: nil)
        log.append(accepted(1))
        try store.write(log.takePending(), acceptedItems: 1)
        try store.prepare(2)
        #expect(store.isPrepared(2))
        #expect(store.syncNow())
        try fs.syncDirectory("/d")
        #expect(try store.segmentsOnDisk() == [1, 2])
        let recovery = try JournalStore(directory: "/d", fileSystem: fs, segmentBytes: 1 << 16).recover(maxRecordBytes: 1 << 20) { _, _ in }
        #expect(recovery.lastSegment == 1 && recovery.records == 1)
        #expect(try store.segmentsOnDisk() == [1])

        fs.failNext = ("allocate", ENOSPC)
        #expect(throws: JournalError.self) { try store.prepare(3) }
        #expect(!store.isPrepared(3))
        #expect(try store.segmentsOnDisk() == [1], "no file is left behind")
    }
}
