import DroverPool
import Foundation
import Synchronization

/// The journal's files: segment files in one directory, written by the broker's loop and made
/// durable by a journal thread of their own, so that the loop never waits on the disk.
///
/// Group commit: the loop writes each turn's records (``write(_:acceptedItems:)``, into the page
/// cache, a preallocated segment) and goes on serving; the journal thread syncs whatever was
/// written while its previous sync ran, with no timer, so a lone item is synced at once and a
/// busy broker covers thousands of records per `fdatasync`. After each sync it publishes the
/// position reached (``synced``) and calls `onSynced`, and the loop releases what waited for it.
///
/// A failed write or sync is final (``failure``): Linux may have dropped the pages that failed,
/// so retrying could report as durable what is not. The broker stops accepting and exits; the
/// next start replays what really is on disk.
public final class JournalStore: Sendable {
    public let directory: String
    public let segmentBytes: Int
    let fileSystem: any JournalFileSystem

    private struct Shared: Sendable {
        var written: UInt64 = 0
        var synced: UInt64 = 0
        var dirty: [any JournalFile] = []
        var directoryDirty = false
        var deletions: [(after: UInt64, segment: UInt32)] = []
        var stopping = false
        var failure: JournalError?
        var acceptedWritten = 0
        var stats = JournalStats()
    }

    private let shared = Mutex(Shared())
    private let condition = NSCondition()
    /// Segment files open for writing, by number (the loop's own; the journal thread holds its own references).
    private let files = Mutex<[UInt32: any JournalFile]>([:])
    private let thread = Mutex<JoinableThread?>(nil)
    /// Segments open for reading payloads back (``readPayload(segment:offset:length:)``).
    private let readers = Mutex<[UInt32: any JournalFile]>([:])
    /// The next segment, made and allocated ahead of need (``prepare(_:)``).
    private let prepared = Mutex<(segment: UInt32, file: any JournalFile)?>(nil)
    private let syncedPosition = Atomic<UInt64>(0)
    private let failed = Atomic<Bool>(false)

    public init(directory: String, fileSystem: any JournalFileSystem = DiskFileSystem(), segmentBytes: Int) {
        self.directory = directory
        self.fileSystem = fileSystem
        self.segmentBytes = segmentBytes
    }

    /// The largest record length recovery believes (a segment may have been larger when it was
    /// written); a longer one is a damaged length field.
    public static let largestPlausibleRecord = 1 << 30

    public static func segmentName(_ number: UInt32) -> String {
        let digits = String(number)
        return "segment-" + String(repeating: "0", count: max(0, 10 - digits.count)) + digits + ".journal"
    }

    static func segmentNumber(_ name: String) -> UInt32? {
        guard name.hasPrefix("segment-"), name.hasSuffix(".journal") else { return nil }
        return UInt32(name.dropFirst(8).dropLast(8))
    }

    func path(_ segment: UInt32) -> String { directory + "/" + Self.segmentName(segment) }

    // MARK: Recovery

    /// What recovery found.
    public struct Recovery: Sendable {
        public var oldestSegment: UInt32?
        public var lastSegment: UInt32?
        /// Just past the last good record of ``lastSegment`` (where writing may go on).
        public var lastSegmentEnd: Int?
        public var segments = 0
        public var records = 0
        public var bytesRead = 0
        /// Bytes of a torn tail cut off the last segment (a write a crash cut short).
        public var tornBytes = 0
        public var tornSegment: UInt32?
        public var tornOffset = 0
    }

    /// Damage that stops recovery: the file, the offset and what is wrong there.
    public struct Damage: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var offset: Int
        public var reason: String
        public var description: String { "\(path) at offset \(offset): \(reason)" }
    }

    /// The segment numbers on disk, oldest first (including one made ahead and still empty).
    /// Throws when one is missing in the middle.
    public func segmentsOnDisk() throws -> [UInt32] {
        let numbers = try fileSystem.list(directory).compactMap(Self.segmentNumber).sorted()
        for (a, b) in zip(numbers, numbers.dropFirst()) where b != a + 1 {
            throw Damage(path: path(a + 1), offset: 0, reason: "segment \(a + 1) is missing between \(a) and \(b)")
        }
        return numbers
    }

    /// Reads every segment, oldest first, and passes each record (with its segment) to `apply`.
    /// Cuts a torn tail off the last segment (durably); throws ``Damage`` for anything else, and
    /// cuts nothing then. With `repair: false` it only reads (`drover journal verify`).
    public func recover(maxRecordBytes: Int, repair: Bool = true,
                        apply: (JournalRecord, UInt32) throws -> Void) throws -> Recovery {
        var recovery = Recovery()
        var numbers = try segmentsOnDisk()
        // Segments made ahead of need and never written (all zeros) hold nothing: the last
        // segment with records is the one whose tail a crash may have torn.
        var lastBytes: [UInt8]?
        while let last = numbers.last {
            let file = try fileSystem.open(path(last), create: false)
            let bytes = try file.read(at: 0, count: try file.size())
            guard JournalReader.isZero(bytes[...]) else {
                lastBytes = bytes
                break
            }
            if repair { try fileSystem.remove(path(last)) }
            numbers.removeLast()
        }
        if repair { try fileSystem.syncDirectory(directory) }
        recovery.oldestSegment = numbers.first
        recovery.lastSegment = numbers.last
        for number in numbers {
            let file = try fileSystem.open(path(number), create: false)
            let bytes = number == numbers.last ? lastBytes! : try file.read(at: 0, count: try file.size())
            recovery.bytesRead += bytes.count
            recovery.segments += 1
            let scan = JournalReader.scan(bytes, segment: number, isLast: number == numbers.last, maxRecordBytes: maxRecordBytes)
            switch scan.problem {
            case .damaged(let offset, let reason)?:
                throw Damage(path: path(number), offset: offset, reason: reason)
            case .tornTail(let offset, let torn)?:
                recovery.tornBytes = torn
                recovery.tornSegment = number
                recovery.tornOffset = offset
                if repair {
                    // Cut it for good, so that the next start does not meet it again.
                    if scan.end == 0 {
                        try fileSystem.remove(path(number))
                        try fileSystem.syncDirectory(directory)
                        recovery.lastSegment = number > (numbers.first ?? 0) ? number - 1 : nil
                        if recovery.lastSegment == nil { recovery.oldestSegment = nil }
                    } else {
                        try file.truncate(to: scan.end)
                        try file.sync()
                    }
                }
            case nil:
                break
            }
            if number == recovery.lastSegment { recovery.lastSegmentEnd = scan.end }
            for (_, record) in scan.records { try apply(record, number) }
            recovery.records += scan.records.count
        }
        return recovery
    }

    // MARK: Writing (the broker's loop)

    /// Writes chunks made by a ``JournalLog``, in order, and tells the journal thread.
    /// `acceptedItems` counts the items first accepted in them (for items per sync).
    public func write(_ chunks: [JournalLog.Chunk], acceptedItems: Int) throws(JournalError) {
        guard let last = chunks.last else { return }
        var touched: [any JournalFile] = []
        var opened = false
        for chunk in chunks {
            let file: any JournalFile
            if chunk.opensSegment {
                if let ready = prepared.withLock({ p in p?.segment == chunk.segment ? p.take()!.file : nil }) {
                    file = ready
                } else {
                    file = try fileSystem.open(path(chunk.segment), create: true)
                    try file.allocate(segmentBytes)
                }
                files.withLock { $0[chunk.segment] = file }
                opened = true
            } else if let open = files.withLock({ $0[chunk.segment] }) {
                file = open
            } else {
                // Going on where the last run stopped: a cut tail made the file shorter.
                file = try fileSystem.open(path(chunk.segment), create: false)
                try file.allocate(segmentBytes)
                files.withLock { $0[chunk.segment] = file }
            }
            try file.write(chunk.bytes, at: chunk.offset)
            if !touched.contains(where: { $0 === file }) { touched.append(file) }
        }
        // Only the newest segment stays open for writing.
        files.withLock { open in open = open.filter { $0.key >= last.segment } }
        let newlyOpened = opened
        shared.withLock {
            $0.written = last.end
            $0.acceptedWritten += acceptedItems
            $0.stats.bytesWritten += UInt64(chunks.reduce(0) { $0 + $1.bytes.count })
            for file in touched where !$0.dirty.contains(where: { $0 === file }) { $0.dirty.append(file) }
            if newlyOpened {
                $0.directoryDirty = true
                $0.stats.segmentsCreated += 1
            }
        }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// Makes segment `number` and reserves its space now, before a record needs it, so that a
    /// full disk shows itself while the current segment still has room: the broker can then
    /// refuse new items and still record what happens to those it holds. Throws the system's
    /// error (``JournalError/isNoSpace`` for a full disk), leaving no file behind.
    public func prepare(_ number: UInt32) throws(JournalError) {
        if prepared.withLock({ $0?.segment == number }) { return }
        let file = try fileSystem.open(path(number), create: true)
        do {
            try file.allocate(segmentBytes)
        } catch {
            try? fileSystem.remove(path(number))
            throw error
        }
        prepared.withLock { $0 = (number, file) }
    }

    /// Reads `length` bytes at `offset` of segment `segment` (a payload dropped from memory);
    /// nil when they cannot be read. Records are written before any payload is dropped, so
    /// the bytes are there (in the page cache, or on disk).
    public func readPayload(segment: UInt32, offset: Int, length: Int) -> [UInt8]? {
        let file: (any JournalFile)? = readers.withLock { open in
            if let file = open[segment] { return file }
            guard let file = try? fileSystem.open(path(segment), create: false) else { return nil }
            open[segment] = file
            return file
        }
        guard let file, let bytes = try? file.read(at: offset, count: length), bytes.count == length else { return nil }
        return bytes
    }

    /// Whether segment `number` is made and allocated.
    public func isPrepared(_ number: UInt32) -> Bool { prepared.withLock { $0?.segment == number } }

    /// Deletes `segments` once everything written so far is synced (so the records that
    /// replaced theirs are on disk first).
    public func delete(_ segments: [UInt32]) {
        guard !segments.isEmpty else { return }
        shared.withLock { state in
            for segment in segments { state.deletions.append((state.written, segment)) }
        }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// The log position the journal has made durable.
    public var synced: UInt64 { syncedPosition.load(ordering: .acquiring) }
    /// The log position written so far.
    public var written: UInt64 { shared.withLock { $0.written } }
    /// The first write or sync that failed; after it nothing more is made durable.
    public var failure: JournalError? { failed.load(ordering: .acquiring) ? shared.withLock { $0.failure } : nil }
    public var stats: JournalStats { shared.withLock { $0.stats } }

    // MARK: The journal thread

    /// Starts the journal thread; `onSynced` is called after each sync (and after a failure).
    public func start(onSynced: @escaping @Sendable () -> Void) {
        let thread = JoinableThread(name: "drover-journal") { [self] in run(onSynced) }
        self.thread.withLock { $0 = thread }
    }

    /// Syncs what was written, stops the journal thread and waits for it.
    public func stop() {
        shared.withLock { $0.stopping = true }
        condition.lock()
        condition.signal()
        condition.unlock()
        thread.withLock { $0 }?.join()
    }

    /// Syncs once, now, on the calling thread (for tests that step the journal by hand).
    @discardableResult
    public func syncNow() -> Bool { syncOnce() != nil }

    private func run(_ onSynced: @Sendable () -> Void) {
        while true {
            condition.lock()
            while shared.withLock({ $0.written == $0.synced && $0.deletions.isEmpty && !$0.stopping }) {
                condition.wait()
            }
            condition.unlock()
            let (stopping, hasFailed) = shared.withLock { ($0.stopping, $0.failure != nil) }
            if hasFailed { return }
            syncOnce()
            onSynced()
            if stopping && shared.withLock({ $0.written == $0.synced && $0.deletions.isEmpty }) { return }
        }
    }

    /// One group commit: sync every file written since the last one (and the directory when a
    /// segment was made), publish the position, then delete segments that were waiting for it.
    /// Returns the position synced, or nil after a failure.
    @discardableResult
    private func syncOnce() -> UInt64? {
        let (target, dirty, directoryDirty, accepted) = shared.withLock { state in
            defer {
                state.dirty.removeAll()
                state.directoryDirty = false
                state.acceptedWritten = 0
            }
            return (state.written, state.dirty, state.directoryDirty, state.acceptedWritten)
        }
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            for file in dirty { try file.sync() }
            if directoryDirty { try fileSystem.syncDirectory(directory) }
        } catch {
            fail(error)
            return nil
        }
        let micros = (DispatchTime.now().uptimeNanoseconds - started) / 1000
        let due: [UInt32] = shared.withLock { state in
            state.synced = target
            if !dirty.isEmpty {
                state.stats.syncs += 1
                state.stats.itemsSynced += accepted
                state.stats.syncMicroseconds += micros
                state.stats.maxSyncMicroseconds = max(state.stats.maxSyncMicroseconds, micros)
            }
            let due = state.deletions.filter { $0.after <= target }.map(\.segment)
            state.deletions.removeAll { $0.after <= target }
            return due
        }
        syncedPosition.store(target, ordering: .releasing)
        if !due.isEmpty {
            do {
                for segment in due { try fileSystem.remove(path(segment)) }
                readers.withLock { open in for segment in due { open[segment] = nil } }
                try fileSystem.syncDirectory(directory)
                shared.withLock { $0.stats.segmentsDeleted += due.count }
            } catch {
                fail(error)
                return nil
            }
        }
        return target
    }

    private func fail(_ error: JournalError) {
        shared.withLock { if $0.failure == nil { $0.failure = error } }
        failed.store(true, ordering: .releasing)
    }
}

/// Figures for `drover status`.
public struct JournalStats: Sendable, Codable, Equatable {
    public var syncs = 0
    /// Items first accepted in the records each sync covered, summed.
    public var itemsSynced = 0
    public var syncMicroseconds: UInt64 = 0
    public var maxSyncMicroseconds: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    public var segmentsCreated = 0
    public var segmentsDeleted = 0
}
