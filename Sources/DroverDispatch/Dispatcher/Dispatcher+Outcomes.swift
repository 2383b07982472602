import DroverJournal
import DroverProtocol

/// Outcomes: completion, retry with jittered exponential backoff, and the dead-letter store.
extension Dispatcher {
    /// A worker finished deliveries and granted `amount` more credit. An outcome counts only
    /// if it matches the item's current lease (worker and attempt); any other is stale.
    public mutating func done(from peer: PeerID, credit amount: UInt32, _ outcomes: [ItemOutcome], now: Int64) {
        guard var record = workers[peer] else {
            // A worker we declared dead came back: whatever it reports was redelivered.
            counters.staleOutcomes += outcomes.count
            return unknownPeer(peer)
        }
        var results = Results()
        var completed: [JournalRecord.CompletedItem] = []
        let recentBefore = items.recentTotal
        for outcome in outcomes {
            guard let (slot, position) = items.endLease(outcome.id, attempt: outcome.attempt, of: &record) else {
                counters.staleOutcomes += 1
                continue
            }
            record.completed += 1
            switch outcome.status {
            case .succeeded:
                counters.completed += 1
                let producer = items[slot].producer
                if producer != 0 { results.add(outcome, for: producer, &producers) }
                countOut(slot)
                if journal != nil {
                    completed.append(.init(id: outcome.id, outcome: producer != 0 ? outcome : nil))
                    journalRelease(slot)
                }
                items.complete(slot, at: position, outcome: producer != 0 ? outcome : nil)
            case .failed:
                items[slot].item.failures += 1
                items.setLastError(slot, String(decoding: outcome.payload, as: UTF8.self))
                if Int(items[slot].item.failures) >= limits.maxDeliveries(for: items[slot].item.queue) {
                    deadLetter(slot, now: now, into: &results)
                } else {
                    scheduleRetry(slot, now: now)
                }
            }
        }
        journalCompleted(completed, since: recentBefore)
        grant(&record, peer: peer, amount)
        workers[peer] = record
        send(results)
        dispatch(record.queue)
    }

    /// Moves retries that have fallen due back onto their queues.
    public mutating func releaseDueRetries(now: Int64) {
        var touched: Set<String> = []
        while let next = retries.last, next.due <= now {
            retries.removeLast()
            items[next.slot].state = .queued
            queues[items[next.slot].item.queue, default: QueueState()].items.append(next.slot)
            touched.insert(items[next.slot].item.queue)
        }
        for name in touched { dispatch(name) }
    }

    /// The backoff before retry number `failures` (1-based): base × 2^(failures-1), capped,
    /// then a uniform draw between half and all of it.
    mutating func backoff(failures: UInt32) -> Int64 {
        let exponent = min(Int(failures) - 1, 30)
        let full = min(limits.retryBaseMilliseconds << exponent, limits.retryMaxMilliseconds)
        let half = full / 2
        return half + Int64.random(in: 0...max(full - half, 0), using: &random)
    }

    mutating func scheduleRetry(_ slot: UInt32, now: Int64) {
        counters.retried += 1
        items[slot].state = .retrying
        items.ownPayload(slot)
        journalFailure(slot, dead: false)
        let due = now + backoff(failures: items[slot].item.failures)
        // Latest due first, so the next one is always `last`.
        var low = 0, high = retries.count
        while low < high {
            let mid = (low + high) / 2
            if retries[mid].due > due { low = mid + 1 } else { high = mid }
        }
        retries.insert(Retry(due: due, slot: slot), at: low)
    }

    /// Moves an item that has used up its deliveries to the dead-letter store (still held);
    /// its producer, if waiting, is told it failed.
    mutating func deadLetter(_ slot: UInt32, now: Int64, into results: inout Results) {
        counters.failed += 1
        counters.deadLettered += 1
        items[slot].state = .dead
        items.ownPayload(slot)
        journalFailure(slot, dead: true)
        deadOrder.append(slot)
        deadSince[slot] = now
        let producer = items[slot].producer
        if producer != 0 {
            let item = items[slot].item
            let text = "dead-lettered after \(item.failures) failed deliveries: \(items.lastError(slot))"
            results.add(ItemOutcome(id: item.id, attempt: item.deliveries, status: .failed, payload: Array(text.utf8)),
                        for: producer, &producers)
            items[slot].producer = 0
        }
    }

    mutating func deadLetter(_ slot: UInt32, now: Int64) {
        var results = Results()
        deadLetter(slot, now: now, into: &results)
        send(results)
    }

    mutating func send(_ results: Results) {
        for group in results.groups { send(group.peer, .result(group.outcomes)) }
    }

    /// Outcomes for producers, grouped by producer (usually one per `done`).
    struct Results {
        struct Group {
            var number: UInt32
            var peer: PeerID
            var outcomes: [ItemOutcome]
        }

        var groups: [Group] = []

        /// Adds an outcome for producer `number`, ending that item's claim on the number.
        mutating func add(_ outcome: ItemOutcome, for number: UInt32, _ producers: inout ProducerTable) {
            if let index = groups.lastIndex(where: { $0.number == number }) {
                groups[index].outcomes.append(outcome)
            } else {
                groups.append(Group(number: number, peer: producers.peer(number), outcomes: [outcome]))
            }
            producers.release(number)
        }
    }
}
