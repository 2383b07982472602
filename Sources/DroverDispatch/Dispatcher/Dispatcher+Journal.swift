import DroverJournal
import DroverProtocol

/// The journal's side of the books: what the dispatcher records as items change, and how a
/// broker rebuilds itself from those records after a restart.
///
/// What is recorded (see ``JournalRecord``): items accepted, completed (with the outcome kept
/// for a resubmission), failed (to retry, or dead), put back without a failure, replayed and
/// purged. Leases are not: every item still held when the broker stopped comes back queued,
/// and since a delivery that was never recorded may have been running, its delivery count
/// goes up by one, so the next attempt number is above any handed out before the restart.
extension Dispatcher {
    /// Records the accepted items in `fresh` (consecutive sequence numbers), split into records
    /// that fit the journal's limit, and notes the segment each went into.
    mutating func journalAccepted(_ fresh: [UInt32], queue: String, timeoutMilliseconds: UInt32) {
        guard var log = journal, !fresh.isEmpty else { return }
        journal = nil  // moved out, so that appending does not copy its buffers
        defer { journal = log }
        var start = 0
        while start < fresh.count {
            var end = start, bytes = 0
            while end < fresh.count {
                let size = items[fresh[end]].item.payload.count + 20
                if end > start && JournalLog.acceptedBytes(queue: queue, payloadBytes: bytes + size, count: end - start + 1) > log.maxRecordBytes { break }
                bytes += size
                end += 1
            }
            let group = fresh[start..<end]
            let segment = log.appendAccepted(queue: queue, timeoutMilliseconds: timeoutMilliseconds,
                                             firstSequence: items[group.first!].item.sequence, count: group.count) { i in
                let item = items[group[group.startIndex + i]].item
                return (item.id, item.payload)
            }
            var groupBytes = 0
            var offset = log.lastRecordStart + JournalLog.acceptedItemsOffset(queue: queue)
            for slot in group {
                items[slot].item.segment = segment
                items[slot].item.payloadOffset = UInt32(offset + 20)
                offset += 20 + items[slot].item.payload.count
                groupBytes += Self.journalBytes(items[slot].item)
            }
            log.retain(segment, bytes: groupBytes)
            start = end
        }
        journalAcceptedItems += fresh.count
    }

    /// Records that the items in `completed` finished; `since` is ``ItemTable/recentTotal`` from
    /// before they did.
    mutating func journalCompleted(_ completed: [JournalRecord.CompletedItem], since: UInt64) {
        guard journal != nil, !completed.isEmpty else { return }
        // In records under the journal's limit; a result too large for one keeps only its id
        // in the journal (a resubmission after a restart is then accepted, without the result).
        let limit = journal!.maxRecordBytes - 64
        var pieces: [[JournalRecord.CompletedItem]] = [[]]
        var bytes = 0
        for var entry in completed {
            if let outcome = entry.outcome, outcome.payload.count + 64 > limit { entry.outcome = nil }
            let size = 32 + (entry.outcome?.payload.count ?? 0)
            if bytes + size > limit && !pieces[pieces.count - 1].isEmpty {
                pieces.append([])
                bytes = 0
            }
            pieces[pieces.count - 1].append(entry)
            bytes += size
        }
        var remembered = items.recentTotal
        var start = since
        for piece in pieces {
            let segment = journal!.append(.completed(piece))
            remembered = start + UInt64(piece.count)
            let kept = items.placeRecentCompletions(since: start, upTo: remembered, in: segment)
            if kept > 0 { journal!.retain(segment, bytes: kept) }
            start = remembered
        }
        releaseEvictedCompletions()
    }

    /// Splits `entries` into runs that fit the journal's records (about `each` bytes apiece).
    func journalPieces<T>(_ entries: [T], each: Int) -> [ArraySlice<T>] {
        let per = max(1, (journal?.maxRecordBytes ?? 1 << 20) / (each + 8) - 1)
        return stride(from: 0, to: entries.count, by: per).map { entries[$0..<min($0 + per, entries.count)] }
    }

    /// About how many bytes an item's record takes in the journal (its share of the segment's books).
    /// Counted from the payload's length, which stays the same when the payload is dropped
    /// from memory and read back.
    static func journalBytes(_ item: Item) -> Int { Int(item.payloadLength) + 20 }

    /// An item leaves the books: its record's segment has one live item fewer.
    mutating func journalRelease(_ slot: UInt32) {
        guard journal != nil else { return }
        let segment = items[slot].item.segment
        if segment != ItemTable.noSegment { journal!.release(segment, bytes: Self.journalBytes(items[slot].item)) }
    }

    mutating func releaseEvictedCompletions() {
        guard journal != nil else { return }
        for (segment, bytes) in items.takeEvictedSegments() { journal!.release(segment, bytes: bytes) }
    }

    /// Records a failed delivery of the item in `slot` (its counts already updated).
    mutating func journalFailure(_ slot: UInt32, dead: Bool) {
        guard journal != nil else { return }
        let item = items[slot].item
        journal!.append(.failed(.init(id: item.id, deliveries: item.deliveries, failures: item.failures, dead: dead,
                                      error: items.lastError(slot))))
    }

    /// Records items put back on their queue without a failure.
    mutating func journalReturned(_ slots: [UInt32]) {
        guard journal != nil, !slots.isEmpty else { return }
        for piece in journalPieces(slots, each: 20) {
            journal!.append(.returned(piece.map { .init(id: items[$0].item.id, deliveries: items[$0].item.deliveries) }))
        }
    }

    // MARK: Upkeep

    /// After each turn: copies forward the few items that keep an old segment alive, and
    /// returns the segments that hold nothing live any more (delete them once synced).
    public mutating func takeDrainedSegments() -> [UInt32] {
        guard var log = journal else { return [] }
        journal = nil
        defer { journal = log }
        if let old = log.needsCompaction {
            for slot in items.slots.indices where items.slots[slot].state != .free && items.slots[slot].item.segment == old {
                let entry = items.slots[slot]
                let state: JournalRecord.CarriedItem.State = switch entry.state {
                case .dead: .dead
                case .retrying: .retrying
                default: .queued
                }
                guard let payload = payload(of: UInt32(slot)) else {
                    payloadReadFailure = "cannot read the payload of item \(entry.item.id) back from journal segment \(old) to copy it forward"
                    break
                }
                let segment = log.append(.carried(.init(
                    id: entry.item.id, queue: entry.item.queue, sequence: entry.item.sequence, deliveries: entry.item.deliveries,
                    failures: entry.item.failures, timeoutMilliseconds: entry.item.timeoutMilliseconds, state: state,
                    lastError: items.lastError(UInt32(slot)), payload: payload)))
                items[UInt32(slot)].item.segment = segment
                items[UInt32(slot)].item.payloadOffset = UInt32(log.lastRecordEnd - payload.count)
                log.release(old, bytes: Self.journalBytes(entry.item))
                log.retain(segment, bytes: Self.journalBytes(entry.item))
            }
            for (place, id, outcome) in items.recentCompletions(in: old) {
                let segment = log.append(.completed([.init(id: id, outcome: outcome)]))
                items.moveRecentCompletion(at: place, to: segment)
                log.release(old, bytes: ItemTable.journalBytes(outcome))
                log.retain(segment, bytes: ItemTable.journalBytes(outcome))
            }
        }
        return log.takeDrained()
    }

    /// Items first accepted since the last call (for items per sync).
    public mutating func takeJournalAcceptedItems() -> Int {
        defer { journalAcceptedItems = 0 }
        return journalAcceptedItems
    }

    // MARK: Recovery

    /// Applies one record read back from the journal (from `segment`), in log order, to a
    /// dispatcher that has not served anyone yet.
    public mutating func recover(_ record: JournalRecord, segment: UInt32) {
        switch record {
        case .accepted(let batch):
            for (i, entry) in batch.items.enumerated() {
                var item = Item(id: entry.id, queue: batch.queue, payload: entry.payload,
                                timeoutMilliseconds: batch.timeoutMilliseconds, sequence: batch.firstSequence + UInt64(i))
                let slot = restore(item: &item, segment: segment, state: .queued)
                items.setLastError(slot, nil)
            }
            nextSequence = max(nextSequence, batch.firstSequence + UInt64(batch.items.count))
        case .carried(let c):
            var item = Item(id: c.id, queue: c.queue, payload: c.payload, timeoutMilliseconds: c.timeoutMilliseconds, sequence: c.sequence)
            item.deliveries = c.deliveries
            item.failures = c.failures
            let state: ItemTable.State = switch c.state {
            case .queued: .queued
            case .retrying: .retrying
            case .dead: .dead
            }
            let slot = restore(item: &item, segment: segment, state: state)
            items.setLastError(slot, c.lastError.isEmpty ? nil : c.lastError)
            nextSequence = max(nextSequence, c.sequence + 1)
        case .completed(let completed):
            for entry in completed {
                if let slot = items.slot(of: entry.id) { countOut(slot) }
                items.restoreCompletion(entry.id, outcome: entry.outcome, segment: segment)
            }
            _ = items.takeEvictedSegments()
        case .failed(let f):
            guard let slot = items.slot(of: f.id) else { return }
            items[slot].item.deliveries = f.deliveries
            items[slot].item.failures = f.failures
            items[slot].state = f.dead ? .dead : .retrying
            items.setLastError(slot, f.error)
        case .returned(let list):
            for entry in list {
                guard let slot = items.slot(of: entry.id) else { continue }
                items[slot].item.deliveries = max(items[slot].item.deliveries, entry.deliveries)
                items[slot].state = .queued
            }
        case .replayed(let list):
            for entry in list {
                guard let slot = items.slot(of: entry.id) else { continue }
                items[slot].item.failures = 0
                items[slot].item.sequence = entry.sequence
                items[slot].state = .queued
                items.setLastError(slot, nil)
                nextSequence = max(nextSequence, entry.sequence + 1)
            }
        case .purged(let ids):
            for id in ids {
                guard let slot = items.slot(of: id) else { continue }
                countOut(slot)
                items.remove(slot)
            }
        }
    }

    /// Stores an item met in recovery: its payload is a slice of the segment read back, which
    /// starts at the segment's first byte, so the slice's start is the payload's offset there.
    /// Past the memory limit, the payload is not kept: it is read back when dispatched.
    private mutating func restore(item: inout Item, segment: UInt32, state: ItemTable.State) -> UInt32 {
        item.segment = segment
        item.payloadOffset = UInt32(item.payload.startIndex)
        if payloadBytesInMemory + item.payload.count > limits.memoryLimitBytes && !item.payload.isEmpty {
            item.payload = []
            spilledItems += 1
        } else {
            // A copy: a slice would keep the whole segment read back alive.
            item.payload = Array(item.payload)[...]
        }
        if let existing = items.slot(of: item.id) { countOut(existing) }
        let slot = items.restore(item, state: state)
        countIn(slot)
        return slot
    }

    /// What a recovery brought back, for the broker's log.
    public struct RecoveredItems: Sendable, Equatable {
        public var queued = 0
        public var retrying = 0
        public var dead = 0
        public var recentCompletions = 0
    }

    /// Ends recovery: puts queued items on their queues in acceptance order, schedules the
    /// retries, fills the dead-letter store, and starts journaling into `log` (whose books it
    /// fills with where each record is).
    public mutating func finishRecovery(journal log: JournalLog, now: Int64) -> RecoveredItems {
        var log = log
        var recovered = RecoveredItems()
        var queued: [UInt32] = []
        for index in items.slots.indices where items.slots[index].state != .free {
            let slot = UInt32(index)
            if items[slot].item.segment != ItemTable.noSegment { log.retain(items[slot].item.segment, bytes: Self.journalBytes(items[slot].item)) }
            switch items[slot].state {
            case .queued, .leased:
                // It may have been running, on a delivery the journal never saw.
                items[slot].item.deliveries += 1
                items[slot].state = .queued
                queued.append(slot)
            case .retrying:
                items[slot].item.deliveries += 1
                recovered.retrying += 1
                let due = now + backoff(failures: max(items[slot].item.failures, 1))
                var low = 0, high = retries.count
                while low < high {
                    let mid = (low + high) / 2
                    if retries[mid].due > due { low = mid + 1 } else { high = mid }
                }
                retries.insert(Retry(due: due, slot: slot), at: low)
            case .dead:
                recovered.dead += 1
                deadOrder.append(slot)
                deadSince[slot] = now
            case .free:
                break
            }
        }
        queued.sort { items[$0].item.sequence < items[$1].item.sequence }
        for slot in queued { queues[items[slot].item.queue, default: QueueState()].items.append(slot) }
        recovered.queued = queued.count
        journal = log
        // The delivery counted for what may have been running is recorded, so that a second
        // crash before these items are touched does not count it again from the same base.
        journalReturned(queued + retries.map(\.slot))
        log = journal!
        for (segment, bytes) in items.currentRecentSegments where segment != ItemTable.noSegment {
            log.retain(segment, bytes: bytes)
            recovered.recentCompletions += 1
        }
        journal = log
        return recovered
    }
}
