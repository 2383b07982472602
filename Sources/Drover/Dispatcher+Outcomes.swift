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
        var results: [PeerID: [ItemOutcome]] = [:]
        for outcome in outcomes {
            guard let lease = releaseLease(outcome.id, attempt: outcome.attempt, of: peer, &record) else {
                counters.staleOutcomes += 1
                continue
            }
            record.completed += 1
            switch outcome.status {
            case .succeeded:
                counters.completed += 1
                finish(lease.item.id, outcome, into: &results)
            case .failed:
                var item = lease.item
                item.failures += 1
                item.lastError = String(decoding: outcome.payload, as: UTF8.self)
                if Int(item.failures) >= limits.maxDeliveries(for: item.queue) {
                    deadLetter(item, now: now, into: &results)
                } else {
                    scheduleRetry(item, now: now)
                }
            }
        }
        grant(&record, peer: peer, amount)
        workers[peer] = record
        for (producer, list) in results { send(producer, .result(list)) }
        dispatch(record.queue)
    }

    /// Moves retries that have fallen due back onto their queues.
    public mutating func releaseDueRetries(now: Int64) {
        var touched: Set<String> = []
        while let next = retries.last, next.due <= now {
            retries.removeLast()
            queues[next.item.queue, default: QueueState()].items.append(next.item)
            touched.insert(next.item.queue)
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

    mutating func scheduleRetry(_ item: Item, now: Int64) {
        counters.retried += 1
        let due = now + backoff(failures: item.failures)
        // Latest due first, so the next one is always `last`.
        var low = 0, high = retries.count
        while low < high {
            let mid = (low + high) / 2
            if retries[mid].due > due { low = mid + 1 } else { high = mid }
        }
        retries.insert((due, item), at: low)
    }

    /// Records a successful completion: the item leaves the books, its producer gets the outcome.
    private mutating func finish(_ id: ItemID, _ outcome: ItemOutcome, into results: inout [PeerID: [ItemOutcome]]) {
        live.remove(id)
        held -= 1
        let producer = routes.removeValue(forKey: id)
        if let producer { results[producer, default: []].append(outcome) }
        recent.remember(id, outcome: producer != nil ? outcome : nil)
    }

    /// Moves an item that has used up its deliveries to the dead-letter store (still held);
    /// its producer, if waiting, is told it failed.
    mutating func deadLetter(_ item: Item, now: Int64, into results: inout [PeerID: [ItemOutcome]]) {
        live.remove(item.id)
        counters.failed += 1
        counters.deadLettered += 1
        dead[item.id] = DeadLetter(item: item, at: now)
        deadOrder.append(item.id)
        if let producer = routes.removeValue(forKey: item.id) {
            let text = "dead-lettered after \(item.failures) failed deliveries: \(item.lastError)"
            results[producer, default: []].append(ItemOutcome(id: item.id, attempt: item.deliveries, status: .failed, payload: Array(text.utf8)))
        }
    }

    mutating func deadLetter(_ item: Item, now: Int64) {
        var results: [PeerID: [ItemOutcome]] = [:]
        deadLetter(item, now: now, into: &results)
        for (producer, list) in results { send(producer, .result(list)) }
    }
}
