import DroverProtocol
import Logging
import Testing
@testable import Drover

@Suite("Lookahead that sizes itself")
struct LookaheadSizerTests {
    @Test("it starts at 1, does not grow before an item has ended, then doubles on each starvation up to 4096")
    func growth() {
        var sizer = LookaheadSizer(threads: 2, fixed: nil)
        #expect(sizer.capacity == 3)
        sizer.starved()
        #expect(sizer.lookahead == 1, "nothing is known of the items yet")
        sizer.finished(microseconds: [2, 2])
        for _ in 0..<20 { sizer.starved() }
        #expect(sizer.lookahead == LookaheadSizer.maxLookahead)
        #expect(sizer.maxCapacity == 2 + 4096)
    }

    @Test("slow items keep it at 1 whatever starvation asks; items that turn slow shrink it at once")
    func slowItems() {
        var slow = LookaheadSizer(threads: 2, fixed: nil)
        slow.finished(microseconds: [500_000])
        for _ in 0..<10 { slow.starved() }
        #expect(slow.lookahead == 1, "half-second items: 1 beyond the threads")

        var turning = LookaheadSizer(threads: 2, fixed: nil)
        turning.finished(microseconds: [10])
        for _ in 0..<20 { turning.starved() }
        #expect(turning.lookahead == 4096)
        turning.finished(microseconds: Array(repeating: 1_000_000, count: 100))
        #expect(turning.lookahead == 1)
        // 1 ms items: at most about 50 ms of work per thread waits here.
        var milli = LookaheadSizer(threads: 2, fixed: nil)
        milli.finished(microseconds: [1000])
        for _ in 0..<20 { milli.starved() }
        #expect(milli.lookahead == 100)
    }

    @Test("large items: at most about 64 MiB waits in a worker, however fast they are handled")
    func largeItems() {
        var sizer = LookaheadSizer(threads: 2, fixed: nil)
        sizer.finished(microseconds: [2])
        for _ in 0..<20 { sizer.starved() }
        #expect(sizer.lookahead == 4096)
        sizer.received(payloadBytes: Array(repeating: 1 << 20, count: 64))
        #expect(sizer.lookahead <= 64 + 4, "1 MiB items: about 64 of them")
        #expect(sizer.lookahead >= 60)
        var small = LookaheadSizer(threads: 2, fixed: nil)
        small.received(payloadBytes: [16, 16])
        small.finished(microseconds: [2])
        for _ in 0..<20 { small.starved() }
        #expect(small.lookahead == 4096, "small items are not limited by size")
    }

    @Test("credit grants: a delivery that uses up a whole grant shows the broker had items waiting; part of one does not")
    func grants() {
        var grants = CreditGrants()
        grants.grant(3)
        grants.grant(2)
        let partOfFirst = grants.use(2)
        #expect(!partOfFirst, "part of the first grant: the broker may have run out")
        #expect(grants.total == 3)
        let restOfFirst = grants.use(1)
        #expect(restOfFirst, "the rest of the first grant")
        let second = grants.use(2)
        #expect(second && grants.total == 0)
        let beyond = grants.use(4)
        #expect(!beyond, "beyond every grant (sent before a new registration): nothing to use up")
        #expect(grants.total == 0)
        grants.grant(4)
        grants.reset()
        let afterReset = grants.use(1)
        #expect(grants.total == 0 && !afterReset)
    }

    @Test("--lookahead N fixes it")
    func fixed() {
        var sizer = LookaheadSizer(threads: 4, fixed: 7)
        sizer.finished(microseconds: [1])
        sizer.starved()
        sizer.finished(microseconds: [10_000_000])
        #expect(sizer.lookahead == 7 && sizer.capacity == 11 && sizer.maxCapacity == 11)
    }

    @Test("a worker whose threads run dry while the broker has more grants more credit with its next done")
    func sessionGrows() {
        var options = WorkerOptions(broker: "tcp://127.0.0.1:1")
        options.threads = 2
        options.name = "w"
        var session = WorkerSession(options: options, ports: FakeWorkerPorts(),
                                    logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), now: 0)
        session.start(now: 0)
        _ = session.received(.welcome(Welcome(maxItemBytes: 1 << 20, heartbeatMilliseconds: 1000, fleet: .initial, instance: 1)), now: 1)
        #expect(session.ports.sent.last == .credit(3))
        session.ports.sent.removeAll()
        var next: UInt64 = 1
        func deliveries(_ n: Int) -> [Delivery] {
            defer { next += UInt64(n) }
            return (0..<UInt64(n)).map { Delivery(id: ItemID(high: 1, low: next + $0), attempt: 1, payload: []) }
        }
        var granted: [UInt32] = []
        var credit = 3
        for round in 0..<14 {
            // The broker fills the credit; the threads run everything at once (fast items).
            _ = session.received(.deliver(deliveries(credit)), now: 2 + Int64(round))
            session.ports.start(session.ports.queued.count)
            let done = session.ports.running.map { FinishedJob(slot: $0.slot, outcome: ItemOutcome(id: $0.delivery.id, attempt: 1, status: .succeeded, payload: []), microseconds: 3) }
            session.ports.running.removeAll()
            session.finished(done, now: 2 + Int64(round))
            guard case .done(let more, _)? = session.ports.sent.last else { Issue.record("expected a done"); return }
            granted.append(more)
            credit = Int(more)
        }
        #expect(granted.first == 3, "no growth before the first items ended")
        #expect(granted.last == 4098, "then doubling to the maximum: \(granted)")
        #expect(session.ports.capacities.last == 4098)
        #expect(session.brokerCredit.total == 4098)
    }
}
