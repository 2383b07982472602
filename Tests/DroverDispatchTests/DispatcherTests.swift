import DroverProtocol
import Testing
@testable import DroverDispatch

@Suite("Dispatcher: credit, LRU, leases, fencing")
struct DispatcherTests {
    let producer: PeerID = Array("producer".utf8)
    let controller: PeerID = Array("controller".utf8)
    let w1: PeerID = Array("w1".utf8)
    let w2: PeerID = Array("w2".utf8)

    func makeDispatcher(maxItems: Int = 1000, maxItemBytes: Int = 100, maxDeliveries: Int = 5) -> Dispatcher {
        var limits = DispatcherLimits(maxItemBytes: maxItemBytes, maxItems: maxItems, workerLivenessMilliseconds: 3000)
        limits.maxDeliveries = maxDeliveries
        limits.retryBaseMilliseconds = 100
        limits.retryMaxMilliseconds = 1000
        return introduced(Dispatcher(limits: limits, seed: 42))
    }

    /// `d` with both test producers introduced (only a producer that said hello may submit).
    func introduced(_ dispatcher: Dispatcher) -> Dispatcher {
        var d = dispatcher
        for peer in [producer, Array("producer-2".utf8)] {
            d.hello(from: peer, Hello(role: .producer, name: "p"), now: 0, heartbeatMilliseconds: 1000)
        }
        _ = d.takeOutbox()
        return d
    }

    func id(_ n: UInt64) -> ItemID { ItemID(high: 1, low: n) }

    func submit(_ d: inout Dispatcher, _ range: ClosedRange<UInt64>, queue: String = "q", results: Bool = true) {
        d.submit(from: producer, Submit(queue: queue, wantsResults: results,
                                        items: range.map { SubmittedItem(id: id($0), payload: Array("\($0)".utf8)) }), now: 0)
    }

    func join(_ d: inout Dispatcher, _ peer: PeerID, queue: String = "q", now: Int64 = 0) {
        d.hello(from: peer, Hello(role: .worker, name: String(decoding: peer, as: UTF8.self), queue: queue, concurrency: 2),
                now: now, heartbeatMilliseconds: 1000)
    }

    /// The deliveries in an outbox, per worker.
    func deliveries(_ out: [Outgoing]) -> [PeerID: [Delivery]] {
        var result: [PeerID: [Delivery]] = [:]
        for o in out { if case .deliver(let d) = o.message { result[o.peer, default: []] += d } }
        return result
    }

    @Test("nothing is dispatched without credit, and never more than the credit")
    func onlyAgainstCredit() {
        var d = makeDispatcher()
        join(&d, w1)
        submit(&d, 1...10)
        #expect(deliveries(d.takeOutbox()).isEmpty)
        d.credit(from: w1, 3)
        let got = deliveries(d.takeOutbox())
        #expect(got[w1]?.map(\.id) == [id(1), id(2), id(3)])
        #expect(got[w1]?.allSatisfy { $0.attempt == 1 } == true)
    }

    @Test("a worker registering again keeps the leases its hello names; the others run again, and their late outcomes are stale")
    func registeringAgainReclaimsLeases() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 3)
        submit(&d, 1...3)
        let first = deliveries(d.takeOutbox())[w1] ?? []
        #expect(first.map(\.id) == [id(1), id(2), id(3)])
        // Item 1's outcome and item 3's delivery were lost with a dropped connection; item 2 runs.
        d.hello(from: w1, Hello(role: .worker, name: "w1", queue: "q", concurrency: 2, held: [DeliveryRef(id: id(2), attempt: 1)]),
                now: 10, heartbeatMilliseconds: 1000)
        #expect(d.counters.reclaimed == 2)
        #expect(d.status(now: 10).queues.first?.queued == 2)
        d.credit(from: w1, 2)
        let again = deliveries(d.takeOutbox())[w1] ?? []
        #expect(again.map(\.id) == [id(1), id(3)], "in their order, at the front of the queue")
        #expect(again.allSatisfy { $0.attempt == 2 })
        d.done(from: w1, credit: 0, [ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: [])], now: 11)
        #expect(d.counters.staleOutcomes == 1, "the lost outcome, arriving late, completes nothing")
        d.done(from: w1, credit: 0, [1, 2, 3].map { ItemOutcome(id: id($0), attempt: $0 == 2 ? 1 : 2, status: .succeeded, payload: []) }, now: 12)
        #expect(d.counters.completed == 3)
        #expect(d.items.count == 0)
    }

    @Test("a hello that names no held items (another client) keeps every lease")
    func helloWithoutHeldKeepsLeases() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 2)
        submit(&d, 1...2)
        _ = d.takeOutbox()
        join(&d, w1, now: 10)
        #expect(d.counters.reclaimed == 0)
        #expect(d.status(now: 10).queues.first?.leased == 2)
    }

    @Test("workers with credit are served least-recently-used, one item at a time")
    func lruAcrossWorkers() {
        var d = makeDispatcher()
        join(&d, w1)
        join(&d, w2)
        d.credit(from: w1, 2)
        d.credit(from: w2, 2)
        _ = d.takeOutbox()
        submit(&d, 1...3)
        let got = deliveries(d.takeOutbox())
        #expect(got[w1]?.map(\.id) == [id(1), id(3)])
        #expect(got[w2]?.map(\.id) == [id(2)])
    }

    @Test("a completed item's result goes to its producer; credit returns with done")
    func resultsRouteToProducer() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 1)
        submit(&d, 1...2)
        _ = d.takeOutbox()
        d.done(from: w1, credit: 1, [ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: Array("R".utf8))], now: 0)
        let out = d.takeOutbox()
        #expect(out.contains(Outgoing(peer: producer, message: .result([ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: Array("R".utf8))]))))
        #expect(deliveries(out)[w1]?.map(\.id) == [id(2)])
        #expect(d.counters.completed == 1)
        #expect(d.itemsHeld == 1)
    }

    @Test("an outcome from a superseded delivery is rejected and never completes the item twice")
    func fencing() {
        var d = makeDispatcher()
        join(&d, w1, now: 0)
        d.credit(from: w1, 1)
        submit(&d, 1...1)
        _ = d.takeOutbox()
        // w1 goes silent; its item is redelivered to w2 on attempt 2.
        let expired = d.expireSilentWorkers(now: 10_000)
        #expect(expired == ["w1"])
        join(&d, w2, now: 10_000)
        d.credit(from: w2, 1)
        #expect(deliveries(d.takeOutbox())[w2]?.first?.attempt == 2)
        // The late outcome of attempt 1 (w1 came back) is stale.
        join(&d, w1, now: 10_001)
        d.done(from: w1, credit: 0, [ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: [])], now: 0)
        #expect(d.counters.staleOutcomes == 1)
        #expect(d.counters.completed == 0)
        d.done(from: w2, credit: 0, [ItemOutcome(id: id(1), attempt: 2, status: .succeeded, payload: [])], now: 0)
        d.done(from: w2, credit: 0, [ItemOutcome(id: id(1), attempt: 2, status: .succeeded, payload: [])], now: 0)
        #expect(d.counters.completed == 1)
        #expect(d.counters.staleOutcomes == 2)
        #expect(d.itemsHeld == 0)
    }

    @Test("items handed back return to the front of the queue in their original order, and the worker gets no more")
    func handBack() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 3)
        submit(&d, 1...5)
        _ = d.takeOutbox()
        d.handBack(from: w1, [DeliveryRef(id: id(3), attempt: 1), DeliveryRef(id: id(2), attempt: 1)])
        d.credit(from: w1, 5)  // a draining worker's credit is ignored
        #expect(deliveries(d.takeOutbox()).isEmpty)
        join(&d, w2)
        d.credit(from: w2, 10)
        #expect(deliveries(d.takeOutbox())[w2]?.map(\.id) == [id(2), id(3), id(4), id(5)])
        #expect(d.counters.handedBack == 2)
    }

    @Test("a worker's bye returns its leases and is acknowledged")
    func byeRequeues() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 2)
        submit(&d, 1...2)
        _ = d.takeOutbox()
        d.bye(from: w1, code: .drained, reason: "test", now: 5)
        #expect(d.takeOutbox().contains(Outgoing(peer: w1, message: .bye(.acknowledged, "ok"))))
        #expect(d.status(now: 5).queues.first?.queued == 2)
        #expect(d.status(now: 5).departed.first?.how == "bye")
    }

    @Test("queue names: spaces and control characters are refused, in ASCII and beyond it")
    func queueNames() {
        for bad in ["", "a b", "a\tb", "a\u{7F}", "a\u{85}b", "naïve name"] {
            #expect(QueueName.problem(bad) != nil, "\(bad.debugDescription)")
        }
        for good in ["q", "default", "jobs.high-priority_2", "café", "a\u{A0}b"] {
            #expect(QueueName.problem(good) == nil, "\(good.debugDescription)")
        }
    }

    @Test("a submit from a peer that never said hello is refused with error 3 (a worker's with error 5), and nothing is kept")
    func submitNeedsHello() {
        var d = makeDispatcher()
        let stranger: PeerID = Array("stranger".utf8)
        d.submit(from: stranger, Submit(queue: "q", wantsResults: true, items: [SubmittedItem(id: id(1), payload: [])]), now: 0)
        guard case .error(let code, _)? = d.takeOutbox().first?.message else { Issue.record("expected an error"); return }
        #expect(code == .unknownPeer)
        join(&d, w1)
        _ = d.takeOutbox()
        d.submit(from: w1, Submit(queue: "q", wantsResults: true, items: [SubmittedItem(id: id(1), payload: [])]), now: 0)
        guard case .error(let workerCode, _)? = d.takeOutbox().first?.message else { Issue.record("expected an error"); return }
        #expect(workerCode == .notAllowed)
        #expect(d.itemsHeld == 0)
        // A producer silent past the liveness window is forgotten, and must say hello again.
        _ = d.expireSilentWorkers(now: 3001)
        submit(&d, 1...1)
        guard case .error(let forgotten, _)? = d.takeOutbox().first?.message else { Issue.record("expected an error"); return }
        #expect(forgotten == .unknownPeer)
        d.hello(from: producer, Hello(role: .producer, name: "p"), now: 3002, heartbeatMilliseconds: 1000)
        guard case .welcome(let welcome)? = d.takeOutbox().first?.message else { Issue.record("expected a welcome"); return }
        #expect(welcome.livenessMilliseconds == 3000)
        submit(&d, 1...1)
        #expect(d.itemsHeld == 1)
    }

    @Test("the producer's item time limit travels with each delivery of its items, redeliveries too")
    func itemTimeoutTravels() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 2)
        d.submit(from: producer, Submit(queue: "q", wantsResults: false, itemTimeoutMilliseconds: 1500,
                                        items: [SubmittedItem(id: id(1), payload: [1])]), now: 0)
        submit(&d, 2...2, results: false)
        let first = deliveries(d.takeOutbox())[w1] ?? []
        #expect(first.map(\.timeoutMilliseconds) == [1500, 0])
        d.done(from: w1, credit: 1, [ItemOutcome(id: id(1), attempt: 1, status: .failed, payload: [])], now: 0)
        _ = d.takeOutbox()
        d.releaseDueRetries(now: 10_000)
        #expect(deliveries(d.takeOutbox())[w1]?.first?.timeoutMilliseconds == 1500)
    }

    @Test("a worker's handler health shows in status; the broker hears once when it starts to keep dying")
    func handlerHealth() {
        var d = makeDispatcher()
        join(&d, w1)
        #expect(d.handlerState(from: w1, HandlerHealth(restarts: 1, deathsInARow: 1, problem: "exited with status 3")) == nil)
        #expect(d.handlerState(from: w1, HandlerHealth(restarts: 3, deathsInARow: 3, problem: "exited with status 3")) == "w1")
        #expect(d.handlerState(from: w1, HandlerHealth(restarts: 4, deathsInARow: 4, problem: "exited with status 3")) == nil, "told once")
        let worker = d.status(now: 0).workers.first
        #expect(worker?.handlerRestarts == 4 && worker?.handlerDeathsInARow == 4 && worker?.handlerProblem == "exited with status 3")
        _ = d.takeOutbox()
        d.handlerState(from: Array("stranger".utf8), HandlerHealth(restarts: 1))
        guard case .error(let code, _)? = d.takeOutbox().first?.message else { Issue.record("expected an error"); return }
        #expect(code == .unknownPeer)
    }

    @Test("oversize items, a full broker, a bad queue name and an exiting fleet are refused with reasons")
    func rejections() {
        var d = makeDispatcher(maxItems: 3, maxItemBytes: 4)
        d.submit(from: producer, Submit(queue: "q", wantsResults: false, items: [SubmittedItem(id: id(1), payload: [UInt8](repeating: 0, count: 5))]), now: 0)
        guard case .rejected(let big)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(big.code == .tooLarge && big.reason.contains("4 bytes"))

        submit(&d, 1...4, results: false)
        guard case .rejected(let full)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(full.code == .queueFull && full.ids.count == 4)

        submit(&d, 1...1, queue: "has space")
        guard case .rejected(let name)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(name.code == .badQueueName)
        submit(&d, 1...1, queue: "")
        guard case .rejected(let empty)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(empty.code == .badQueueName)
        var fresh = makeDispatcher()
        submit(&fresh, 1...1, queue: "")  // the first submit of all
        guard case .rejected(let first)? = fresh.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(first.code == .badQueueName)

        d.hello(from: controller, Hello(role: .controller, name: "c"), now: 0, heartbeatMilliseconds: 1000)
        d.fleetState(from: controller, FleetState(epoch: 5, phase: .exiting, deadlineMilliseconds: 0))
        _ = d.takeOutbox()
        submit(&d, 1...1)
        guard case .rejected(let exiting)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(exiting.code == .fleetExiting)
        #expect(d.itemsHeld == 0)
    }

    @Test("only a controller sets fleet state; an older epoch changes nothing; workers hear the change")
    func fleetState() {
        var d = makeDispatcher()
        join(&d, w1)
        _ = d.takeOutbox()
        let byProducer = d.fleetState(from: producer, FleetState(epoch: 9, phase: .exiting, deadlineMilliseconds: 0))
        #expect(!byProducer)
        #expect(d.fleet == .initial)
        d.hello(from: controller, Hello(role: .controller, name: "c"), now: 0, heartbeatMilliseconds: 1000)
        let exiting = FleetState(epoch: 10, phase: .exiting, deadlineMilliseconds: 1000)
        _ = d.takeOutbox()
        let changed = d.fleetState(from: controller, exiting)
        #expect(changed)
        #expect(d.takeOutbox().contains(Outgoing(peer: w1, message: .fleet(exiting))))
        let older = d.fleetState(from: controller, FleetState(epoch: 3, phase: .running, deadlineMilliseconds: 0))
        #expect(!older)
        #expect(d.fleet == exiting)
    }

    @Test("a failed item is retried after a jittered, growing backoff, then dead-lettered at the cap")
    func retriesThenDeadLetter() {
        var d = makeDispatcher(maxDeliveries: 3)
        join(&d, w1)
        d.credit(from: w1, 1)
        submit(&d, 1...1)
        var now: Int64 = 0
        var delays: [Int64] = []
        for attempt in 1...3 {
            let delivered = deliveries(d.takeOutbox())[w1]
            #expect(delivered?.first?.attempt == UInt32(attempt))
            d.done(from: w1, credit: 1, [ItemOutcome(id: id(1), attempt: UInt32(attempt), status: .failed, payload: Array("boom \(attempt)".utf8))], now: now)
            guard attempt < 3 else { break }
            let due = d.nextRetryDue!
            delays.append(due - now)
            d.releaseDueRetries(now: due - 1)
            #expect(deliveries(d.takeOutbox()).isEmpty, "nothing before the backoff is over")
            now = due
            d.releaseDueRetries(now: now)
        }
        // base 100 ms: the first wait is in [50, 100], the second in [100, 200].
        #expect((50...100).contains(delays[0]) && (100...200).contains(delays[1]), "\(delays)")
        let out = d.takeOutbox()
        guard case .result(let results)? = out.first(where: { $0.peer == producer })?.message else { Issue.record("no result"); return }
        #expect(results.first?.status == .failed)
        #expect(String(decoding: results.first!.payload, as: UTF8.self) == "dead-lettered after 3 failed deliveries: boom 3")
        #expect(d.counters.retried == 2 && d.counters.deadLettered == 1)
        #expect(d.itemsHeld == 1, "a dead item is still held")
        #expect(d.status(now: now).queues.first?.dead == 1)
    }

    @Test("replay puts a dead item back with a fresh cap; purge deletes it")
    func replayAndPurge() throws {
        var d = makeDispatcher(maxDeliveries: 1)
        join(&d, w1)
        d.credit(from: w1, 2)
        submit(&d, 1...2)
        _ = d.takeOutbox()
        d.done(from: w1, credit: 0, [ItemOutcome(id: id(1), attempt: 1, status: .failed, payload: []),
                                     ItemOutcome(id: id(2), attempt: 1, status: .failed, payload: [])], now: 0)
        _ = d.takeOutbox()
        #expect(d.deadLetters(.list(limit: 0), now: 5).contains(id(1).description))
        #expect(d.deadLetters(.replay([id(1)]), now: 5).contains("\"count\":1"))
        d.credit(from: w1, 1)
        let again = deliveries(d.takeOutbox())[w1]
        #expect(again?.map(\.id) == [id(1)])
        #expect(again?.first?.attempt == 2, "attempts keep growing across a replay")
        #expect(d.deadLetters(.purge([]), now: 6).contains("\"count\":1"))
        #expect(d.itemsHeld == 1)
        #expect(d.deadLetters(.show(id(2)), now: 6).contains("\"unknown\""))
    }

    @Test("a worker that dies mid-item counts as a failed delivery; one that says bye does not")
    func deathCountsAgainstTheCap() {
        var d = makeDispatcher(maxDeliveries: 2)
        join(&d, w1, now: 0)
        d.credit(from: w1, 1)
        submit(&d, 1...1)
        _ = d.takeOutbox()
        d.bye(from: w1, code: .stoppedAtOnce, reason: "stopped at once", now: 1)
        join(&d, w2, now: 1)
        d.credit(from: w2, 1)
        #expect(deliveries(d.takeOutbox())[w2]?.first?.attempt == 2)
        d.expireSilentWorkers(now: 10_000)
        join(&d, w1, now: 10_000)
        d.credit(from: w1, 1)
        #expect(deliveries(d.takeOutbox())[w1]?.first?.attempt == 3, "one death: still under the cap of 2")
        d.expireSilentWorkers(now: 20_000)
        #expect(d.counters.deadLettered == 1)
        #expect(d.deadLetters(.list(limit: 0), now: 20_000).contains("went silent while running attempt 3"))
    }

    @Test("a resubmitted id is not held twice: a live one is re-routed, a completed one gets its result again")
    func deduplication() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 1)
        submit(&d, 1...2)
        _ = d.takeOutbox()
        let other: PeerID = Array("producer-2".utf8)
        d.submit(from: other, Submit(queue: "q", wantsResults: true, items: [SubmittedItem(id: id(2), payload: [])]), now: 0)
        #expect(d.takeOutbox() == [Outgoing(peer: other, message: .accepted([id(2)]))])
        #expect(d.itemsHeld == 2)
        let result = ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: Array("R".utf8))
        d.done(from: w1, credit: 1, [result], now: 0)
        let delivered = deliveries(d.takeOutbox())[w1]
        d.done(from: w1, credit: 0, [ItemOutcome(id: id(2), attempt: delivered!.first!.attempt, status: .succeeded, payload: [])], now: 0)
        #expect(d.takeOutbox().contains { $0.peer == other }, "the outcome goes to the producer that resubmitted")
        d.submit(from: other, Submit(queue: "q", wantsResults: true, items: [SubmittedItem(id: id(1), payload: [])]), now: 0)
        #expect(d.takeOutbox() == [Outgoing(peer: other, message: .accepted([id(1)])), Outgoing(peer: other, message: .result([result]))])
        #expect(d.counters.duplicates == 2)
        #expect(d.counters.accepted == 2)
    }

    @Test("the memory of completed ids is bounded: the oldest is forgotten first, and then runs again")
    func dedupWindowIsBounded() {
        var limits = DispatcherLimits(maxItemBytes: 100, maxItems: 1000, workerLivenessMilliseconds: 3000)
        limits.dedupWindow = 2
        var d = introduced(Dispatcher(limits: limits, seed: 1))
        join(&d, w1)
        d.credit(from: w1, 3)
        submit(&d, 1...3)
        _ = d.takeOutbox()
        d.done(from: w1, credit: 0, (1...3).map { ItemOutcome(id: id($0), attempt: 1, status: .succeeded, payload: []) }, now: 0)
        _ = d.takeOutbox()
        submit(&d, 1...3)
        #expect(d.counters.duplicates == 2, "ids 2 and 3 are remembered")
        #expect(d.counters.accepted == 4, "id 1 was forgotten and is accepted as new")
        #expect(d.itemsHeld == 1)
    }

    @Test("thousands of numbered items complete and are forgotten oldest first, through the index's pages")
    func manyNumberedItemsComplete() {
        var limits = DispatcherLimits(maxItemBytes: 100, maxItems: 10_000, workerLivenessMilliseconds: 3000)
        limits.dedupWindow = 300
        var d = introduced(Dispatcher(limits: limits, seed: 2))
        join(&d, w1)
        for start in stride(from: 0 as UInt64, to: 5_000, by: 250) {
            submit(&d, start...(start + 249))
            d.credit(from: w1, 250)
            let got = deliveries(d.takeOutbox())[w1] ?? []
            #expect(got.count == 250)
            d.done(from: w1, credit: 0, got.map { ItemOutcome(id: $0.id, attempt: $0.attempt, status: .succeeded, payload: []) }, now: 0)
            _ = d.takeOutbox()
        }
        #expect(d.counters.completed == 5_000)
        #expect(d.itemsHeld == 0)
        submit(&d, 4_600...4_999)
        #expect(d.counters.duplicates == 300, "the last 300 completed are remembered")
        #expect(d.counters.accepted == 5_100, "the 100 before them were forgotten and are accepted as new")
    }

    @Test("a producer waiting for outcomes hears accepted only for items left queued; one that is not waiting, for all")
    func acceptedOnlyForQueuedWhenWaiting() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 2)
        _ = d.takeOutbox()
        submit(&d, 1...3, results: true)
        let out = d.takeOutbox()
        #expect(deliveries(out)[w1]?.map(\.id) == [id(1), id(2)])
        #expect(out.contains(Outgoing(peer: producer, message: .accepted([id(3)]))))
        #expect(d.counters.accepted == 3)
        d.credit(from: w1, 2)
        _ = d.takeOutbox()
        submit(&d, 4...6, results: false)
        let second = d.takeOutbox()
        #expect(second.contains(Outgoing(peer: producer, message: .accepted([id(4), id(5), id(6)]))))
    }

    @Test("a deep queue goes to each worker in one batch, split between workers with credit")
    func deepQueueInBatches() {
        var d = makeDispatcher()
        join(&d, w1)
        join(&d, w2)
        d.credit(from: w1, 100)
        d.credit(from: w2, 100)
        _ = d.takeOutbox()
        submit(&d, 1...100)
        let out = d.takeOutbox().filter { if case .deliver = $0.message { true } else { false } }
        #expect(out.count == 2, "one deliver message per worker")
        let got = deliveries(out)
        #expect(got[w1]?.count == 50)
        #expect(got[w2]?.count == 50)
        #expect(Set((got[w1] ?? []).map(\.id)).union((got[w2] ?? []).map(\.id)).count == 100)
    }

    @Test("an outcome from a worker the broker no longer knows is counted stale")
    func unknownWorkerOutcomeIsStale() {
        var d = makeDispatcher()
        d.done(from: w1, credit: 1, [ItemOutcome(id: id(1), attempt: 1, status: .succeeded, payload: [])], now: 0)
        #expect(d.counters.staleOutcomes == 1)
    }

    @Test("a message from an unknown worker is answered with unknownPeer")
    func unknownWorker() {
        var d = makeDispatcher()
        d.credit(from: w1, 1)
        guard case .error(let code, _)? = d.takeOutbox().first?.message else { Issue.record("expected an error"); return }
        #expect(code == .unknownPeer)
    }

    @Test("a delivery that could not be sent goes back to the queue")
    func undelivered() {
        var d = makeDispatcher()
        join(&d, w1)
        d.credit(from: w1, 2)
        submit(&d, 1...2)
        let sent = deliveries(d.takeOutbox())[w1] ?? []
        d.undelivered(to: w1, sent)
        #expect(d.status(now: 0).queues.first?.queued == 2)
        #expect(d.status(now: 0).queues.first?.leased == 0)
        #expect(d.status(now: 0).workers.first?.credit == 2, "the worker never saw them: its credit stands")
        #expect(deliveries(d.takeOutbox()).isEmpty, "nothing more until the worker is heard from")
        d.seen(w1, now: 1)
        #expect(deliveries(d.takeOutbox())[w1]?.map(\.id) == sent.map(\.id), "then the same items go to it again")
    }

    @Test("byte limits: in memory, past --memory-limit; in all, past --max-bytes: queue full, and room again once items complete")
    func byteLimits() {
        var limits = DispatcherLimits(maxItemBytes: 100, maxItems: 1000, workerLivenessMilliseconds: 3000)
        limits.memoryLimitBytes = 10
        var d = introduced(Dispatcher(limits: limits, seed: 1))
        // Payloads "1".."5" and "10": 6 bytes in 6 items, then 4 more bytes would pass 10.
        submit(&d, 1...5)
        submit(&d, 10...10)
        _ = d.takeOutbox()
        #expect(d.bytesHeld == 7)
        submit(&d, 11...12)
        guard case .rejected(let full)? = d.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(full.code == .queueFull && full.reason.contains("--memory-limit"))
        join(&d, w1)
        d.credit(from: w1, 6)
        let got = deliveries(d.takeOutbox())[w1] ?? []
        d.done(from: w1, credit: 0, got.map { ItemOutcome(id: $0.id, attempt: $0.attempt, status: .succeeded, payload: []) }, now: 0)
        _ = d.takeOutbox()
        #expect(d.bytesHeld == 0 && d.bytesInMemory == 0)
        submit(&d, 11...12)
        #expect(d.takeOutbox().contains { if case .accepted = $0.message { true } else { false } })

        var capped = DispatcherLimits(maxItemBytes: 100, maxItems: 1000, workerLivenessMilliseconds: 3000)
        capped.maxHeldBytes = 3
        var c = introduced(Dispatcher(limits: capped, seed: 1))
        submit(&c, 1...3)
        _ = c.takeOutbox()
        submit(&c, 4...4)
        guard case .rejected(let over)? = c.takeOutbox().first?.message else { Issue.record("expected a rejection"); return }
        #expect(over.code == .queueFull && over.reason.contains("--max-bytes"))
    }
}
