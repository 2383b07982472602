import DroverProtocol
import Logging
import Testing
@testable import Drover

/// A broker link that records what is sent, and a clock the test sets.
struct FakeProducerPorts: ProducerPorts {
    var clock: Int64 = 0
    var connected = true
    var sent: [DroverMessage] = []

    func now() -> Int64 { clock }

    mutating func send(_ message: DroverMessage) throws -> Bool {
        guard connected else { return false }
        sent.append(message)
        return true
    }

    /// The item indices submitted since the last call, in order (keep-alive hellos left out).
    mutating func submitted() -> [UInt64] {
        defer { sent.removeAll() }
        return sent.flatMap { message -> [UInt64] in
            if case .submit(let s) = message { return s.items.map(\.id.low) }
            return []
        }
    }
}

@Suite("Producer session: acceptance, outcomes, resubmission")
struct ProducerSessionTests {
    typealias Session = ProducerSession<FakeProducerPorts>
    static let runID: UInt64 = 77

    func welcome(instance: UInt64 = 1, maxItemBytes: UInt32 = 1000) -> Welcome {
        Welcome(maxItemBytes: maxItemBytes, heartbeatMilliseconds: 1000, fleet: FleetState(epoch: 1, phase: .running, deadlineMilliseconds: 0), instance: instance)
    }

    func session(wait: Bool, batchItems: Int = 256) -> Session {
        var options = ProducerOptions(broker: "tcp://127.0.0.1:1")
        options.waitForResults = wait
        options.batchItems = batchItems
        return Session(options: options, runID: Self.runID, ports: FakeProducerPorts(),
                       logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), welcome: welcome())
    }

    func id(_ n: UInt64) -> ItemID { ItemID(high: Self.runID, low: n) }

    func offer(_ s: inout Session, _ count: Int) throws {
        for n in 0..<count { _ = try s.offer(Array("item \(n)".utf8)) }
        try s.flush()
    }

    @Test("items are batched, sent, and forgotten once accepted; ids from another producer are ignored")
    func acceptance() throws {
        var s = session(wait: false, batchItems: 2)
        try offer(&s, 3)
        #expect(s.ports.sent.count == 2, "a full batch of two, then the rest on flush")
        #expect(s.ports.submitted() == [0, 1, 2])
        try s.received(.accepted([id(0), id(2), ItemID(high: 1, low: 1)]))
        #expect(s.unfinished == 1)
        #expect(s.summary.accepted == 2)
    }

    @Test("with --wait an item stays until its outcome, which is reported once; a result answers an unaccepted item too")
    func outcomes() throws {
        var s = session(wait: true)
        try offer(&s, 3)
        try s.received(.accepted([id(0)]))
        #expect(s.unfinished == 3)
        let done = [ItemOutcome(id: id(0), attempt: 1, status: .succeeded, payload: [1]),
                    ItemOutcome(id: id(1), attempt: 2, status: .failed, payload: Array("boom".utf8))]
        try s.received(.result(done))
        try s.received(.result(done))  // a duplicate after a resubmission
        #expect(s.takeOutcomes().map(\.index) == [0, 1])
        #expect(s.takeOutcomes().isEmpty)
        #expect(s.summary.succeeded == 1 && s.summary.failed == 1 && s.summary.accepted == 2)
        #expect(s.unfinished == 1)
    }

    @Test("an item over the broker's limit is refused before sending; other refusals are recorded; queue full retries after a pause")
    func rejections() throws {
        var s = session(wait: false)
        _ = try s.offer([UInt8](repeating: 0, count: 1001))
        #expect(s.summary.rejected[0]?.contains("the broker accepts at most 1000") == true)
        try offer(&s, 2)  // indices 1 and 2
        _ = s.ports.submitted()
        try s.received(.rejected(Rejection(ids: [id(1)], code: .badQueueName, reason: "bad name")))
        try s.received(.rejected(Rejection(ids: [id(2)], code: .queueFull, reason: "full")))
        #expect(s.summary.rejected[1] == "bad name")
        try s.resendDue()
        #expect(s.ports.submitted().isEmpty, "not before the retry pause")
        s.ports.clock = ProducerTimings.retryAfterFullMilliseconds
        try s.resendDue()
        #expect(s.ports.submitted() == [2])
    }

    @Test("a batch the link cannot take now is offered again shortly")
    func sendFailure() throws {
        var s = session(wait: false)
        s.ports.connected = false
        try offer(&s, 2)
        s.ports.connected = true
        s.ports.clock = 200
        try s.resendDue()
        #expect(s.ports.submitted() == [0, 1])
    }

    @Test("a new broker instance gets every unfinished item again, accepted or not, and acceptance is counted anew")
    func newBrokerInstance() throws {
        var s = session(wait: true)
        try offer(&s, 3)
        _ = s.ports.submitted()
        try s.received(.accepted([id(0), id(1)]))
        try s.received(.result([ItemOutcome(id: id(0), attempt: 1, status: .succeeded, payload: [])]))
        #expect(s.summary.accepted == 2)
        try s.received(.welcome(welcome(instance: 2)))
        try s.resendDue()
        #expect(s.ports.submitted() == [1, 2])
        #expect(s.summary.accepted == 1, "item 1 counts again when the new broker accepts it")
        try s.received(.accepted([id(1), id(2)]))
        #expect(s.summary.accepted == 3)
    }

    @Test("a lost connection: items offered meanwhile wait, and everything unfinished goes again once the broker answers")
    func lostConnection() throws {
        var s = session(wait: true)
        try offer(&s, 2)
        _ = s.ports.submitted()
        try s.received(.accepted([id(0), id(1)]))
        s.ports.connected = false  // the connection is down for a moment: the first hello cannot go
        try s.connectionLost()
        #expect(s.link == .lost(since: 0))
        s.ports.connected = true
        s.ports.clock = 10
        try s.keepAlive()
        #expect(s.ports.sent.contains { if case .hello = $0 { true } else { false } }, "hello as soon as the link takes one, not a heartbeat later")
        _ = try s.offer(Array("late".utf8))
        try s.flush()
        try s.resendDue()
        #expect(s.ports.submitted().isEmpty, "nothing goes into a lost connection")
        try s.received(.welcome(welcome(instance: 1)))
        try s.resendDue()
        #expect(s.ports.submitted() == [0, 1, 2], "the same broker, but what was queued on the old connection is gone")
        #expect(s.link == .up)
    }

    @Test("error 3 (the broker forgot this producer): hello at once, and everything unfinished is offered again")
    func forgottenProducer() throws {
        var s = session(wait: true)
        try offer(&s, 2)
        _ = s.ports.submitted()
        try s.received(.accepted([id(0)]))
        try s.received(.error(.unknownPeer, "submit before hello"))
        #expect(s.link == .lost(since: 0))
        #expect(s.ports.sent.contains { if case .hello = $0 { true } else { false } })
        try s.received(.welcome(welcome(instance: 1)))
        try s.resendDue()
        #expect(s.ports.submitted() == [0, 1], "the accepted item too: the broker may have forgotten it")
        #expect(s.link == .up)
    }

    @Test("a broker silent past the liveness window is lost; past the reconnect timeout the run fails")
    func silentBroker() throws {
        var s = session(wait: false)
        try offer(&s, 1)
        s.ports.clock = 3001
        try s.keepAlive()
        #expect(s.link == .lost(since: 3001))
        s.ports.clock = 3001 + 60_001
        #expect(throws: DroverError.lostContact("", "", "")) { try s.keepAlive() }
    }

    @Test("an error from the broker ends the run with its text")
    func refused() {
        var s = session(wait: false)
        #expect(throws: DroverError.refused("")) { try s.received(.error(.notAllowed, "no")) }
    }
}
