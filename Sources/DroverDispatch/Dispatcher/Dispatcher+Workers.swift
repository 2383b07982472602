import DroverProtocol

/// Workers and the controller: registration, credit, hand-back, departure, fleet state.
extension Dispatcher {
    /// A peer introduced itself.
    public mutating func hello(from peer: PeerID, _ hello: Hello, now: Int64, heartbeatMilliseconds: UInt32) {
        switch hello.role {
        case .worker:
            if var record = workers[peer] {
                // A worker that re-registers (it lost contact with us) keeps the leases it
                // still holds; the others go back to the queue (see ``Hello/held``). Its old
                // credit is void; it grants afresh.
                record.name = hello.name
                record.credit = 0
                record.lastSeen = now
                record.draining = false
                record.stalled = false
                let reclaimed = hello.held.map { reclaimLeases(of: &record, keeping: $0) } ?? []
                workers[peer] = record
                removeFromReady(peer, queue: record.queue)
                counters.reclaimed += reclaimed.count
                requeueAtFront(reclaimed)
            } else {
                workers[peer] = WorkerRecord(number: nextWorkerNumber, name: hello.name, queue: hello.queue,
                                             concurrency: Int(hello.concurrency), lastSeen: now)
                nextWorkerNumber += 1
            }
        case .controller:
            controllers.insert(peer)
        case .producer:
            introducedProducers[peer] = now
        }
        send(peer, .welcome(Welcome(maxItemBytes: UInt32(limits.maxItemBytes), heartbeatMilliseconds: heartbeatMilliseconds,
                                    fleet: fleet, instance: instance,
                                    livenessMilliseconds: UInt32(clamping: limits.workerLivenessMilliseconds))))
    }

    /// Any message from `peer` shows it is alive.
    public mutating func seen(_ peer: PeerID, now: Int64) {
        guard var record = workers[peer] else { return }
        record.lastSeen = now
        let resumed = record.stalled
        record.stalled = false
        workers[peer] = record
        if resumed && record.credit > 0 && !record.draining {
            queues[record.queue, default: QueueState()].ready.append(peer)
            dispatch(record.queue)
        }
    }

    /// A worker granted `amount` more credit.
    public mutating func credit(from peer: PeerID, _ amount: UInt32) {
        guard var record = workers[peer] else { return unknownPeer(peer) }
        grant(&record, peer: peer, amount)
        workers[peer] = record
        dispatch(record.queue)
    }

    /// A worker said how its handler processes fare; shown by ``status(now:)``. Returns the
    /// worker's name when its handler has just started to keep dying (``HandlerHealth/keepsDying``), for
    /// the broker's log.
    @discardableResult
    public mutating func handlerState(from peer: PeerID, _ health: HandlerHealth) -> String? {
        guard var record = workers[peer] else {
            unknownPeer(peer)
            return nil
        }
        let startedDying = health.keepsDying && !record.handler.keepsDying
        record.handler = health
        workers[peer] = record
        return startedDying ? record.name : nil
    }

    /// A worker handed deliveries back unstarted; it is draining and gets no more work.
    /// Handing back does not count against the item's delivery cap.
    public mutating func handBack(from peer: PeerID, _ refs: [DeliveryRef]) {
        guard var record = workers[peer] else { return unknownPeer(peer) }
        record.draining = true
        record.credit = 0
        removeFromReady(peer, queue: record.queue)
        var returned: [UInt32] = []
        for ref in refs {
            guard let slot = items.endLease(ref.id, attempt: ref.attempt, of: &record)?.slot else {
                counters.staleOutcomes += 1
                continue
            }
            returned.append(slot)
        }
        record.handedBack += returned.count
        workers[peer] = record
        counters.handedBack += returned.count
        requeueAtFront(returned)
    }

    /// A worker is leaving. Its remaining leases go back to the queue; it gets a `bye` back as
    /// the acknowledgement it waits for before exiting. Returns the departure when it was a worker.
    @discardableResult
    public mutating func bye(from peer: PeerID, code: ByeCode, reason: String, now: Int64) -> DepartedWorker? {
        controllers.remove(peer)
        send(peer, .bye(.acknowledged, "ok"))
        return remove(peer, because: .bye(code, reason), now: now)
    }

    /// A controller announced fleet state; a newer epoch replaces ours and goes to every worker.
    /// Returns whether the state changed.
    @discardableResult
    public mutating func fleetState(from peer: PeerID, _ state: FleetState) -> Bool {
        guard controllers.contains(peer) else {
            send(peer, .error(.notAllowed, "only a controller may set fleet state; say hello as a controller first"))
            return false
        }
        guard state.epoch > fleet.epoch else { return false }
        fleet = state
        for worker in workers.keys { send(worker, .fleet(state)) }
        return true
    }

    /// Declares dead every worker silent for longer than the liveness window; returns their names.
    /// Producers silent as long are forgotten: their next `submit` is answered with error 3.
    @discardableResult
    public mutating func expireSilentWorkers(now: Int64) -> [String] {
        introducedProducers = introducedProducers.filter { now - $0.value <= limits.workerLivenessMilliseconds }
        let silent = workers.filter { now - $0.value.lastSeen > limits.workerLivenessMilliseconds }
        for peer in silent.keys { remove(peer, because: .silent, now: now) }
        return silent.values.map(\.name)
    }

    /// The ROUTER could not route to `peer` (it is gone). Returns `true` when it was a worker.
    @discardableResult
    public mutating func unreachable(_ peer: PeerID, now: Int64) -> Bool {
        controllers.remove(peer)
        guard workers[peer] != nil else { return false }
        remove(peer, because: .unreachable, now: now)
        return true
    }

    /// A `deliver` could not be sent (the worker's pipe is full or gone): its items return to
    /// the queue, and the attempt does not count. The worker never saw them, so the credit they
    /// used is its own again; it gets no more work until it is heard from (``seen(_:now:)``),
    /// so a full pipe is not retried in a loop.
    public mutating func undelivered(to peer: PeerID, _ deliveries: [Delivery]) {
        guard var record = workers[peer] else { return }
        let returned = deliveries.compactMap { items.endLease($0.id, attempt: $0.attempt, of: &record)?.slot }
        record.credit = min(record.credit + returned.count, Self.maxCredit)
        record.stalled = true
        workers[peer] = record
        removeFromReady(peer, queue: record.queue)
        requeueAtFront(returned)
    }

    // MARK: Internals

    /// Ends every lease of `record` that is not in `held`; returns their slots. Such a lease
    /// was lost with a dropped connection: its delivery never arrived, or its outcome never
    /// came back. Either way the item runs again (at least once), and an outcome from before,
    /// arriving late, is stale.
    mutating func reclaimLeases(of record: inout WorkerRecord, keeping held: [DeliveryRef]) -> [UInt32] {
        let leased = items.leases(from: record.leaseHead)
        guard !leased.isEmpty else { return [] }
        let kept = Set(held)
        var reclaimed: [UInt32] = []
        for slot in leased {
            let item = items[slot].item
            let ref = DeliveryRef(id: item.id, attempt: item.deliveries)
            guard !kept.contains(ref), let ended = items.endLease(ref.id, attempt: ref.attempt, of: &record) else { continue }
            reclaimed.append(ended.slot)
        }
        return reclaimed
    }

    mutating func grant(_ record: inout WorkerRecord, peer: PeerID, _ amount: UInt32) {
        guard !record.draining, amount > 0 else { return }
        let wasReady = record.credit > 0
        record.credit = min(record.credit + Int(amount), Self.maxCredit)
        if !wasReady { queues[record.queue, default: QueueState()].ready.append(peer) }
    }

    /// Takes a worker off the books; the items it held go back to the front of the queue. When
    /// it died (silent or unreachable) each counts as a failed delivery, since a handler that
    /// kills its worker is how a poison item shows itself, and goes to the dead-letter store at
    /// the cap.
    @discardableResult
    mutating func remove(_ peer: PeerID, because departure: Departure, now: Int64) -> DepartedWorker? {
        guard let record = workers.removeValue(forKey: peer) else { return nil }
        removeFromReady(peer, queue: record.queue)
        let orphaned = items.leases(from: record.leaseHead)
        let how = switch departure {
        case .bye: "left"
        case .silent: "went silent"
        case .unreachable: "became unreachable"
        }
        var requeue: [UInt32] = []
        for slot in orphaned {
            switch departure {
            case .bye:
                // It stopped on purpose (a second SIGTERM): not the item's fault.
                break
            case .silent, .unreachable:
                items[slot].item.failures += 1
                items.setLastError(slot, "worker \(record.name) \(how) while running attempt \(items[slot].item.deliveries)")
            }
            if Int(items[slot].item.failures) >= limits.maxDeliveries(for: items[slot].item.queue) {
                deadLetter(slot, now: now)
            } else {
                if case .bye = departure {} else { journalFailure(slot, dead: false) }
                requeue.append(slot)
            }
        }
        let gone = DepartedWorker(name: record.name, queue: record.queue, departure: departure,
                                  completed: record.completed, itemsReturned: record.handedBack + orphaned.count, at: now)
        departed.append(gone)
        if departed.count > Self.departedMemory { departed.removeFirst() }
        requeueAtFront(requeue)
        return gone
    }

    mutating func removeFromReady(_ peer: PeerID, queue name: String) {
        queues[name]?.ready.removeAll { $0 == peer }
    }

    /// Tells a peer the broker does not know it, so that it says hello again.
    public mutating func unknownPeer(_ peer: PeerID) {
        send(peer, .error(.unknownPeer, "this broker does not know you (it may have restarted): send hello again"))
    }
}
