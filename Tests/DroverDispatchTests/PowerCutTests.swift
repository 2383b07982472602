import DroverJournal
import DroverProtocol
import Testing
@testable import DroverDispatch

/// A broker's dispatcher journaling to a simulated disk, driven by random traffic and cut at
/// random points as a power cut would (``SimulatedFileSystem/crash(keepingUnsynced:tornBytes:keepingDirectory:)``),
/// then recovered into a new dispatcher and compared with what the old one held.
///
/// The harness does what the broker's loop does each turn: journal upkeep, write the records,
/// then send; `accepted` and `result` wait until the journal has synced past the records
/// written before them. Syncs happen at random moments (the journal thread's group commits).
struct PowerCutHarness {
    /// What a dispatcher holds, as a restart must keep it: leases count as queued, and an item
    /// waiting to retry as queued too (a retry that fell due is not journaled).
    struct Held: Equatable {
        var queue: String
        var payload: [UInt8]
        var dead: Bool
        var failures: UInt32
    }

    struct Snapshot: Equatable {
        var held: [ItemID: Held]
        var recent: Set<ItemID>
    }

    static func snapshot(_ d: Dispatcher) -> Snapshot {
        var held: [ItemID: Held] = [:]
        for (index, slot) in d.items.slots.enumerated() where slot.state != .free {
            // A payload dropped from memory is read back from the journal, as dispatch would.
            held[slot.item.id] = Held(queue: slot.item.queue, payload: Array(d.payload(of: UInt32(index)) ?? [0xFF]),
                                      dead: slot.state == .dead, failures: slot.item.failures)
        }
        return Snapshot(held: held, recent: Set(d.items.recentIDs))
    }

    let producer: PeerID = Array("producer".utf8)
    let workerPeers: [PeerID] = [Array("w1".utf8), Array("w2".utf8)]
    let fs = SimulatedFileSystem()
    let store: JournalStore
    let limits: DispatcherLimits
    let segmentBytes: Int
    var d: Dispatcher
    var random: SplitMix64
    var now: Int64 = 0
    /// Tell producers before the sync (the negative control: must lose acknowledged items).
    let acknowledgeBeforeSync: Bool

    var waiting: [(position: UInt64, ids: [ItemID])] = []
    /// Ids a producer was told are safe (accepted, or their result).
    var acknowledged: Set<ItemID> = []
    var everAccepted: [ItemID: [UInt8]] = [:]
    /// Ids that left the books (completed or purged) so far.
    var gone: Set<ItemID> = []
    var leases: [PeerID: [Delivery]] = [:]
    var highestAttempt: [ItemID: UInt32] = [:]
    var nextID: UInt64 = 0
    /// After each flush since the last sync: the unsynced changes on disk, the state, and
    /// whether a segment was opened since the last sync (its directory entry not yet durable).
    var boundaries: [(changes: Int, snapshot: Snapshot, gone: Set<ItemID>, newSegment: Bool)] = []
    var openedSegmentSinceSync = false
    var syncedSnapshot: Snapshot
    var compactions = 0

    init(seed: UInt64, dedupWindow: Int, acknowledgeBeforeSync: Bool = false) {
        segmentBytes = 8192
        store = JournalStore(directory: "/data", fileSystem: fs, segmentBytes: segmentBytes)
        var limits = DispatcherLimits(maxItemBytes: 200, maxItems: 100_000, workerLivenessMilliseconds: 3000)
        limits.maxDeliveries = 2
        limits.retryBaseMilliseconds = 50
        limits.retryMaxMilliseconds = 100
        limits.dedupWindow = dedupWindow
        // Without a de-duplication window, also keep few payloads in memory: the rest are
        // dropped and read back from the journal.
        if dedupWindow == 0 { limits.memoryLimitBytes = 600 }
        self.limits = limits
        d = Dispatcher(limits: limits, seed: seed)
        d.journal = JournalLog(segmentBytes: segmentBytes, oldestSegment: nil, lastSegment: nil)
        d.readPayload = { [store] segment, offset, length in store.readPayload(segment: segment, offset: offset, length: length) }
        random = SplitMix64(seed: seed)
        self.acknowledgeBeforeSync = acknowledgeBeforeSync
        syncedSnapshot = Self.snapshot(d)
        d.hello(from: producer, Hello(role: .producer, name: "p"), now: 0, heartbeatMilliseconds: 1000)
        for w in workerPeers { join(w) }
        flush()
    }

    mutating func join(_ w: PeerID) {
        d.hello(from: w, Hello(role: .worker, name: String(decoding: w, as: UTF8.self), queue: "q", concurrency: 2),
                now: now, heartbeatMilliseconds: 1000)
        d.credit(from: w, 8)
    }

    mutating func roll(_ n: Int) -> Int { Int.random(in: 0..<n, using: &random) }

    /// One random thing a fleet does.
    mutating func step() {
        now += 20
        d.hello(from: producer, Hello(role: .producer, name: "p"), now: now, heartbeatMilliseconds: 1000)
        switch roll(20) {
        case 0..<6:
            var items: [SubmittedItem] = []
            for _ in 0..<1 + roll(6) {
                // Now and then an id seen before (a producer resubmitting).
                let id = roll(10) == 0 && nextID > 0 ? ItemID(high: 7, low: UInt64(roll(Int(nextID)))) : ItemID(high: 7, low: nextID)
                if id.low == nextID { nextID += 1 }
                // An id that left the books is a new item if accepted again: its attempts start over.
                if gone.contains(id) { highestAttempt[id] = nil }
                var fresh: [UInt8] = Array("item \(id.low) ".utf8)
                fresh += [UInt8](repeating: UInt8(id.low & 0xFF), count: roll(120))
                let payload: [UInt8] = everAccepted[id] ?? fresh
                items.append(SubmittedItem(id: id, payload: payload[...]))
            }
            d.submit(from: producer, Submit(queue: roll(4) == 0 ? "other" : "q", wantsResults: roll(2) == 0, items: items), now: now)
            // What the dispatcher took (a resubmitted id keeps its first payload).
            for item in items where everAccepted[item.id] == nil { everAccepted[item.id] = Array(item.payload) }
        case 6..<12:
            // A worker finishes (or fails) some of what it holds.
            let w = workerPeers[roll(2)]
            guard var held = leases[w], !held.isEmpty else { break }
            var outcomes: [ItemOutcome] = []
            for _ in 0..<min(held.count, 1 + roll(8)) {
                let delivery = held.remove(at: roll(held.count))
                outcomes.append(ItemOutcome(id: delivery.id, attempt: delivery.attempt, status: roll(4) == 0 ? .failed : .succeeded,
                                            payload: Array("r\(delivery.id.low)".utf8)))
            }
            leases[w] = held
            d.done(from: w, credit: UInt32(outcomes.count), outcomes, now: now)
        case 12:
            // A worker dies: silent past the liveness window; it comes back as new.
            let w = workerPeers[roll(2)]
            d.seen(workerPeers.first { $0 != w }!, now: now + 10_000)
            d.expireSilentWorkers(now: now + 10_000)
            leases[w] = []
            join(w)
        case 13:
            // A worker drains: hands back what it holds, says goodbye, and joins again.
            let w = workerPeers[roll(2)]
            d.handBack(from: w, (leases[w] ?? []).map { DeliveryRef(id: $0.id, attempt: $0.attempt) })
            d.bye(from: w, code: .drained, reason: "drained", now: now)
            leases[w] = []
            join(w)
        case 14:
            let request: DeadLetterRequest = roll(2) == 0 ? .replay([]) : .purge([])
            if case .purge = request {
                for slot in d.deadOrder { gone.insert(d.items[slot].item.id) }
            }
            _ = d.deadLetters(request, now: now)
        case 15..<18:
            now += 100
            d.releaseDueRetries(now: now)
        default:
            sync()
        }
        flush()
    }

    /// The broker loop's turn: upkeep, write, send.
    mutating func flush() {
        if d.journal!.needsCompaction != nil { compactions += 1 }
        let drained = d.takeDrainedSegments()
        let chunks = d.journal!.takePending()
        if chunks.contains(where: \.opensSegment) { openedSegmentSinceSync = true }
        try! store.write(chunks, acceptedItems: d.takeJournalAcceptedItems())
        store.delete(drained)
        d.spillIfOverLimit()
        // As the broker's loop does: the next segment made ahead, its space reserved.
        if !d.journal!.nextSegmentReady {
            try! store.prepare(d.journal!.currentSegment + 1)
            d.journal!.nextSegmentReady = true
        }
        for out in d.takeOutbox() {
            switch out.message {
            case .deliver(let deliveries):
                leases[out.peer, default: []] += deliveries
                for delivery in deliveries { highestAttempt[delivery.id] = max(highestAttempt[delivery.id] ?? 0, delivery.attempt) }
            case .accepted(let ids):
                tell(ids)
            case .result(let outcomes):
                tell(outcomes.map(\.id))
            default:
                break
            }
        }
        // Completed items leave the books.
        let snap = Self.snapshot(d)
        for id in everAccepted.keys where snap.held[id] == nil { gone.insert(id) }
        boundaries.append((fs.unsyncedChanges, snap, gone, openedSegmentSinceSync))
    }

    mutating func tell(_ ids: [ItemID]) {
        if acknowledgeBeforeSync {
            acknowledged.formUnion(ids)
        } else {
            waiting.append((store.written, ids))
        }
    }

    mutating func sync() {
        store.syncNow()
        let synced = store.synced
        while let first = waiting.first, first.position <= synced {
            acknowledged.formUnion(first.ids)
            waiting.removeFirst()
        }
        syncedSnapshot = boundaries.last?.snapshot ?? syncedSnapshot
        boundaries = [(0, syncedSnapshot, gone, false)]
        openedSegmentSinceSync = false
    }

    /// Recovers a new dispatcher from the simulated disk.
    func recover() throws -> (Dispatcher, JournalStore.Recovery) {
        let store = JournalStore(directory: "/data", fileSystem: fs, segmentBytes: segmentBytes)
        var recovered = Dispatcher(limits: limits, seed: 1)
        recovered.readPayload = { [store] segment, offset, length in store.readPayload(segment: segment, offset: offset, length: length) }
        let recovery = try store.recover(maxRecordBytes: JournalStore.largestPlausibleRecord) { record, segment in
            recovered.recover(record, segment: segment)
        }
        let log = JournalLog(segmentBytes: segmentBytes, oldestSegment: recovery.oldestSegment, lastSegment: recovery.lastSegment,
                             lastSegmentEnd: recovery.lastSegmentEnd)
        _ = recovered.finishRecovery(journal: log, now: now)
        return (recovered, recovery)
    }
}

@Suite("Journal: power cuts and recovery")
struct PowerCutTests {
    /// One scenario: `steps` of random traffic, then a cut chosen by `seed`. Returns what went
    /// wrong (empty when nothing did).
    /// What the scenarios exercised, so that a change that stops exercising something shows.
    struct Coverage {
        var exact = 0, torn = 0, killed = 0, segmentsDeleted = 0, compactions = 0, acknowledged = 0, spilled = 0
    }

    static func cutAndRecover(seed: UInt64, steps: Int, dedupWindow: Int, acknowledgeBeforeSync: Bool = false) throws -> [String] {
        var coverage = Coverage()
        return try cutAndRecover(seed: seed, steps: steps, dedupWindow: dedupWindow, acknowledgeBeforeSync: acknowledgeBeforeSync, &coverage)
    }

    static func cutAndRecover(seed: UInt64, steps: Int, dedupWindow: Int, acknowledgeBeforeSync: Bool = false,
                              _ coverage: inout Coverage) throws -> [String] {
        var h = PowerCutHarness(seed: seed, dedupWindow: dedupWindow, acknowledgeBeforeSync: acknowledgeBeforeSync)
        for _ in 0..<steps { h.step() }
        var problems: [String] = []
        // Where to cut: at a turn's end since the last sync (exact), mid-write (torn), or a
        // process kill (everything written survives).
        let kind = h.roll(3)
        let expected: PowerCutHarness.Snapshot?
        var goneThen = h.gone
        switch kind {
        case 0:
            let boundary = h.boundaries[h.roll(h.boundaries.count)]
            h.fs.crash(keepingUnsynced: boundary.changes)
            expected = boundary.newSegment ? nil : boundary.snapshot
            goneThen = boundary.gone
        case 1:
            let changes = h.fs.unsyncedChanges
            h.fs.crash(keepingUnsynced: h.roll(changes + 1), tornBytes: h.roll(64))
            expected = nil
        default:
            h.fs.crash(keepingUnsynced: Int.max, keepingDirectory: true)
            expected = h.boundaries.last!.snapshot
        }
        coverage.segmentsDeleted += h.store.stats.segmentsDeleted
        coverage.compactions += h.compactions
        coverage.spilled += h.d.spilledItems
        coverage.acknowledged += h.acknowledged.count
        switch kind {
        case 0: coverage.exact += expected == nil ? 0 : 1
        case 1: coverage.torn += 1
        default: coverage.killed += 1
        }
        let (recovered, _) = try h.recover()
        let got = PowerCutHarness.snapshot(recovered)
        if let expected {
            if got.held != expected.held {
                let missing = Set(expected.held.keys).subtracting(got.held.keys).count
                let extra = Set(got.held.keys).subtracting(expected.held.keys).count
                let differing = expected.held.filter { got.held[$0.key] != nil && got.held[$0.key] != $0.value }.count
                problems.append("held items differ from the model: \(missing) missing, \(extra) extra, \(differing) in another state")
            }
            if got.recent != expected.recent { problems.append("recent completions differ: \(got.recent.count) vs \(expected.recent.count)") }
        }
        for id in h.acknowledged where got.held[id] == nil && !got.recent.contains(id) && !goneThen.contains(id) {
            problems.append("acknowledged item \(id) was lost")
        }
        for (id, held) in got.held where h.everAccepted[id] != held.payload {
            problems.append("item \(id) came back with other bytes")
        }
        if kind == 2 {
            // Nothing written was lost, so every attempt handed out is known: the next is above it.
            for slot in recovered.items.slots where slot.state != .free && slot.state != .dead {
                if let highest = h.highestAttempt[slot.item.id], slot.item.deliveries < highest {
                    problems.append("item \(slot.item.id) would be delivered again as attempt \(slot.item.deliveries + 1), but \(highest) was handed out")
                }
            }
        }
        return problems
    }

    @Test("1,000 random power cuts: every acknowledged item comes back, and the state equals the model's", arguments: [0, 1_000_000])
    func randomCuts(dedupWindow: Int) throws {
        var failures: [String] = []
        var coverage = Coverage()
        for seed in 1...500 as ClosedRange<UInt64> {
            let problems = try Self.cutAndRecover(seed: seed &* 7919 &+ UInt64(dedupWindow), steps: 60 + Int(seed % 200),
                                                  dedupWindow: dedupWindow, &coverage)
            failures += problems.map { "seed \(seed): \($0)" }
        }
        #expect(failures.isEmpty, "\(failures.count) problems; first: \(failures.prefix(5))")
        // The cuts must have met every path: exact model comparisons, torn writes, process
        // kills, segments deleted, and (without a de-duplication window) compaction.
        #expect(coverage.exact > 50 && coverage.torn > 50 && coverage.killed > 50, "\(coverage)")
        #expect(coverage.acknowledged > 5000, "\(coverage)")
        if dedupWindow == 0 { #expect(coverage.segmentsDeleted > 100 && coverage.compactions > 10 && coverage.spilled > 1000, "\(coverage)") }
    }

    @Test("negative control: a journal that acknowledges before its sync loses acknowledged items under the same cuts")
    func acknowledgingEarlyLoses() throws {
        var losses = 0
        for seed in 1...200 as ClosedRange<UInt64> {
            let problems = try Self.cutAndRecover(seed: seed &* 7919, steps: 40 + Int(seed % 80), dedupWindow: 1_000_000,
                                                  acknowledgeBeforeSync: true)
            losses += problems.filter { $0.contains("was lost") }.count
        }
        #expect(losses > 0, "the test cannot tell a journal that acknowledges early from one that does not")
    }
}
