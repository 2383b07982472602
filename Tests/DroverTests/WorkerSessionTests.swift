import DroverProtocol
import Logging
import Testing
@testable import Drover

/// The handler pool and broker link as arrays: what was sent, what was queued and started.
struct FakeWorkerPorts: WorkerPorts {
    var connected = true
    var sent: [DroverMessage] = []
    /// Jobs in the pool that no thread has started, and jobs running.
    var queued: [HeldJob] = []
    var running: [HeldJob] = []
    var cancelled = 0
    var welcomes: [Welcome] = []

    mutating func send(_ message: DroverMessage) -> Bool {
        guard connected else { return false }
        sent.append(message)
        return true
    }

    mutating func run(_ jobs: [HeldJob]) -> Int {
        queued += jobs
        return jobs.count
    }

    mutating func takeUnstarted() -> [HeldJob] {
        defer { queued.removeAll() }
        return queued
    }

    mutating func cancelRunning() { cancelled += 1 }

    mutating func welcomed(_ welcome: Welcome) { welcomes.append(welcome) }

    var queuedInPool: Int { queued.count }
    var capacities: [Int] = []
    mutating func resized(capacity: Int) { capacities.append(capacity) }

    /// Handler threads start the first `n` queued jobs.
    mutating func start(_ n: Int) {
        running += queued.prefix(n)
        queued.removeFirst(n)
    }

    /// Takes what was sent since the last call.
    mutating func take() -> [DroverMessage] {
        defer { sent.removeAll() }
        return sent
    }
}

@Suite("Worker session: registration, credit, drain, goodbye")
struct WorkerSessionTests {
    typealias Session = WorkerSession<FakeWorkerPorts>

    static let running = FleetState(epoch: 1, phase: .running, deadlineMilliseconds: 0)

    func welcome(instance: UInt64 = 1, fleet: FleetState = running) -> DroverMessage {
        .welcome(Welcome(maxItemBytes: 1 << 20, heartbeatMilliseconds: 1000, fleet: fleet, instance: instance))
    }

    func delivery(_ n: UInt64, attempt: UInt32 = 1) -> Delivery {
        Delivery(id: ItemID(high: 9, low: n), attempt: attempt, payload: [UInt8(n & 0xFF)][...])
    }

    func finished(_ job: HeldJob) -> FinishedJob {
        FinishedJob(slot: job.slot, outcome: ItemOutcome(id: job.delivery.id, attempt: job.delivery.attempt, status: .succeeded, payload: []))
    }

    /// A session with `threads` + `lookahead` slots, started and registered at time 0.
    func registered(threads: Int = 2, lookahead: Int = 1) -> Session {
        var options = WorkerOptions(broker: "tcp://127.0.0.1:1")
        options.threads = threads
        options.lookahead = lookahead
        options.name = "w"
        var session = Session(options: options, ports: FakeWorkerPorts(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), now: 0)
        session.start(now: 0)
        #expect(session.ports.take() == [.hello(Hello(role: .worker, name: "w", queue: "default", concurrency: UInt32(threads), held: []))])
        #expect(session.received(welcome(), now: 1) == nil)
        return session
    }

    @Test("a welcome after hello registers the worker and grants one credit per free slot")
    func registration() {
        var session = registered()
        #expect(session.isRegistered)
        #expect(session.ports.take() == [.credit(3)])
        #expect(session.ports.welcomes.count == 1)
    }

    @Test("two welcomes for crossing hellos grant credit once")
    func crossingHellos() {
        var options = WorkerOptions(broker: "tcp://127.0.0.1:1")
        options.name = "w"
        var session = Session(options: options, ports: FakeWorkerPorts(), logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), now: 0)
        session.start(now: 0)
        _ = session.timers(now: 1500)  // no answer yet: a second hello goes out
        #expect(session.ports.take().filter { if case .hello = $0 { true } else { false } }.count == 2)
        _ = session.received(welcome(), now: 1600)
        _ = session.received(welcome(), now: 1601)
        #expect(session.ports.take() == [.credit(3)], "the second welcome answers a hello already answered")
    }

    @Test("deliveries run in the pool; outcomes go back in done with the credit they free")
    func creditAccounting() {
        var session = registered()
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1), delivery(2), delivery(3)]), now: 2)
        #expect(session.ports.queued.count == 3)
        #expect(session.inPool.count == 3)
        session.ports.start(2)
        let done = session.ports.running.map(finished)
        session.finished(done, now: 3)
        #expect(session.ports.take() == [.done(credit: 2, done.map(\.outcome))])
        #expect(session.inPool.count == 1)
    }

    @Test("items beyond the credit are handed back at once, not dropped")
    func overDelivery() {
        var session = registered(threads: 1, lookahead: 0)
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1), delivery(2)]), now: 2)
        #expect(session.ports.queued.map(\.delivery.id.low) == [1])
        #expect(session.ports.take() == [.handBack([DeliveryRef(id: delivery(2).id, attempt: 1)])])
    }

    @Test("after a broker restart (unknown peer) the worker registers again; outcomes finished meanwhile go to the new broker with fresh credit")
    func reRegistration() {
        var session = registered()
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1), delivery(2)]), now: 2)
        session.ports.start(2)
        _ = session.received(.error(.unknownPeer, "restarted"), now: 3)
        #expect(!session.isRegistered)
        #expect(session.ports.take().count == 1, "a hello")
        let done = session.ports.running.map(finished)
        session.finished(done, now: 4)
        #expect(session.ports.take().isEmpty, "outcomes wait for the registration")
        #expect(session.unsentOutcomes.count == 2)
        _ = session.received(welcome(instance: 2), now: 5)
        #expect(session.ports.take() == [.done(credit: 0, done.map(\.outcome)), .credit(3)],
                "outcomes first, then a grant covering every free slot, counted once")
    }

    @Test("a broker silent past the liveness window: the worker registers again")
    func silentBroker() {
        var session = registered()
        _ = session.ports.take()
        _ = session.timers(now: 1001)
        #expect(session.ports.take() == [.heartbeat])
        _ = session.timers(now: 3002)
        #expect(!session.isRegistered)
        #expect(session.ports.take().count == 1, "a hello")
    }

    @Test("a hello after lost contact names every item the worker answers for; deliveries crossing it are not run")
    func helloNamesHeldItems() {
        var session = registered()  // 3 slots
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1), delivery(2), delivery(3)]), now: 2)
        session.ports.start(2)
        session.finished([finished(session.ports.running.removeFirst())], now: 3)
        #expect(session.ports.take().count == 1, "item 1's outcome went out (and may be lost with the connection)")
        func held(_ message: DroverMessage?) -> Set<UInt64>? {
            guard case .hello(let hello)? = message else { return nil }
            return hello.held.map { Set($0.map(\.id.low)) }
        }
        _ = session.timers(now: 3004)  // the broker has been silent past the liveness window
        #expect(!session.isRegistered)
        #expect(held(session.ports.take().last) == [2, 3], "running and waiting; not item 1, reported already")
        // Item 2 finishes while unregistered: its outcome waits, and the next hello names it.
        session.finished([finished(session.ports.running.removeFirst())], now: 3005)
        #expect(session.ports.take().isEmpty)
        // A delivery the broker sent before it read the hello: it takes it back, so it is not run.
        _ = session.received(.deliver([delivery(4)]), now: 3006)
        #expect(session.ports.queued.map(\.delivery.id.low) == [3])
        #expect(session.ports.take().isEmpty, "neither run nor handed back")
        _ = session.timers(now: 4005)  // no welcome within a second: hello again
        #expect(held(session.ports.take().last) == [2, 3])
        _ = session.received(welcome(), now: 4006)
        #expect(session.isRegistered)
        #expect(session.ports.take().first == .done(credit: 0, [ItemOutcome(id: delivery(2).id, attempt: 1, status: .succeeded, payload: [])]))
    }

    @Test("the broker's heartbeat and liveness from its welcome are used: a broker asking for 200 ms gets heartbeats every 200 ms")
    func brokerTimings() {
        var options = WorkerOptions(broker: "tcp://127.0.0.1:1")
        options.name = "w"
        var session = Session(options: options, ports: FakeWorkerPorts(), logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), now: 0)
        session.start(now: 0)
        _ = session.received(.welcome(Welcome(maxItemBytes: 1 << 20, heartbeatMilliseconds: 200, fleet: Self.running, instance: 1,
                                              livenessMilliseconds: 600)), now: 1)
        _ = session.ports.take()
        _ = session.timers(now: 202)
        #expect(session.ports.take() == [.heartbeat], "at the broker's interval, not the worker's 1000 ms")
        _ = session.received(.heartbeat, now: 300)
        _ = session.timers(now: 850)
        #expect(session.isRegistered, "550 ms of silence is within the broker's 600 ms")
        _ = session.timers(now: 950)
        #expect(!session.isRegistered, "650 ms of silence is past the broker's window: register again")
    }

    @Test("the handler's health goes to the broker when it changes, and again after a new registration")
    func handlerHealth() {
        var session = registered()
        _ = session.ports.take()
        session.handler(HandlerHealth(), now: 2)
        #expect(session.ports.take().isEmpty, "a clean record is not news")
        let dying = HandlerHealth(restarts: 2, deathsInARow: 2, problem: "exited with status 3")
        session.handler(dying, now: 3)
        session.handler(dying, now: 4)
        #expect(session.ports.take() == [.handlerState(dying)], "once per change")
        _ = session.received(.error(.unknownPeer, "restarted"), now: 5)
        session.handler(dying, now: 6)
        #expect(!session.ports.take().contains(.handlerState(dying)), "not while unregistered")
        _ = session.received(welcome(instance: 2), now: 7)
        _ = session.ports.take()
        session.handler(dying, now: 8)
        #expect(session.ports.take() == [.handlerState(dying)], "the new broker hears it too")
    }

    @Test("a pause of this process past the liveness window makes it register again before sending")
    func paused() {
        var session = registered()
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1)]), now: 50)
        session.ports.start(1)
        session.turn(now: 100)
        #expect(session.isRegistered)
        session.turn(now: 5000)
        #expect(!session.isRegistered)
        #expect(session.ports.take().count == 1, "a hello")
        session.finished(session.ports.running.map(finished), now: 5002)
        #expect(!session.ports.take().contains { if case .done = $0 { true } else { false } },
                "outcomes wait for the new registration")
        #expect(session.unsentOutcomes.count == 1)
    }

    @Test("a restart notice while a hello is in flight keeps it in flight: its welcome still grants credit")
    func unknownPeerWhileHelloInFlight() {
        var options = WorkerOptions(broker: "tcp://127.0.0.1:1")
        options.name = "w"
        var session = Session(options: options, ports: FakeWorkerPorts(), logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), now: 0)
        session.start(now: 0)  // the hello goes out
        session.ports.connected = false
        _ = session.received(.error(.unknownPeer, "restarted"), now: 10)  // its hello cannot go out
        session.ports.connected = true
        _ = session.ports.take()
        _ = session.received(welcome(), now: 20)  // the answer to the first hello
        #expect(session.ports.take() == [.credit(3)])
    }

    @Test("drain: unstarted items are handed back, running ones finish, then bye; the broker's bye ends it")
    func drainAndHandBack() {
        var session = registered()
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1), delivery(2), delivery(3)]), now: 2)
        session.ports.start(1)
        session.drain(reason: "SIGTERM", deadline: 30_000, now: 3)
        #expect(session.ports.take() == [.handBack([DeliveryRef(id: delivery(2).id, attempt: 1), DeliveryRef(id: delivery(3).id, attempt: 1)])])
        #expect(session.timers(now: 4) == nil)
        session.finished(session.ports.running.map(finished), now: 5)
        #expect(session.ports.take() == [.done(credit: 0, [ItemOutcome(id: delivery(1).id, attempt: 1, status: .succeeded, payload: [])])],
                "no more credit while draining")
        #expect(session.timers(now: 6) == nil)
        #expect(session.ports.take() == [.bye(.drained, "SIGTERM")])
        #expect(session.received(.bye(.acknowledged, ""), now: 7) == .drained(reason: "SIGTERM"))
    }

    @Test("a fleet exit from the controller drains with the fleet's deadline; past it running items are handed back and stopped")
    func drainDeadline() {
        var session = registered()
        _ = session.ports.take()
        _ = session.received(.deliver([delivery(1)]), now: 2)
        session.ports.start(1)
        session.receivedFromController(.fleet(FleetState(epoch: 5, phase: .exiting, deadlineMilliseconds: 1000)), now: 3)
        guard case .draining = session.phase else { Issue.record("not draining: \(session.phase)"); return }
        _ = session.ports.take()
        #expect(session.timers(now: 500) == nil)
        #expect(session.timers(now: 1003) == nil)
        #expect(session.ports.cancelled == 1)
        #expect(session.ports.take().filter { $0 != .heartbeat } == [.handBack([DeliveryRef(id: delivery(1).id, attempt: 1)]), .bye(.deadlinePassed, WorkerTimings.deadlineByeReason)])
        #expect(session.received(.bye(.acknowledged, ""), now: 1004) == .deadlinePassed(abandoned: 1))
    }

    @Test("a leaving worker waits for an unreachable broker to say goodbye, and gives up after the goodbye wait")
    func goodbyeWait() {
        var session = registered()
        _ = session.ports.take()
        session.ports.connected = false
        session.drain(reason: "SIGTERM", deadline: 30_000, now: 2)
        #expect(session.timers(now: 3) == nil)
        guard case .leaving(_, _, nil, let giveUpAt) = session.phase else { Issue.record("not waiting: \(session.phase)"); return }
        #expect(giveUpAt == 3 + WorkerTimings.goodbyeWaitMilliseconds)
        // The broker comes back (a new registration): the goodbye goes out then.
        session.ports.connected = true
        _ = session.received(.error(.unknownPeer, ""), now: 10)
        _ = session.received(welcome(instance: 2), now: 11)
        #expect(session.ports.take().contains(.bye(.drained, "SIGTERM")))
        #expect(session.received(.bye(.acknowledged, ""), now: 12) == .drained(reason: "SIGTERM"))

        var lonely = registered()
        lonely.ports.connected = false
        lonely.drain(reason: "SIGTERM", deadline: 30_000, now: 2)
        _ = lonely.timers(now: 3)
        #expect(lonely.timers(now: 3 + WorkerTimings.goodbyeWaitMilliseconds - 1) == nil)
        #expect(lonely.timers(now: 3 + WorkerTimings.goodbyeWaitMilliseconds) == .drained(reason: "SIGTERM"))
    }

    @Test("stop now says bye without waiting and stops running items")
    func stopNow() {
        var session = registered()
        _ = session.ports.take()
        #expect(session.stopNow(now: 2) == .stopped)
        #expect(session.ports.take() == [.bye(.stoppedAtOnce, "stopped at once")])
        #expect(session.ports.cancelled == 1)
    }
}
