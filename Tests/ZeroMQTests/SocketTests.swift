import Testing
@testable import ZeroMQ

@Suite("ZeroMQ binding")
struct SocketTests {
    @Test("multipart messages arrive whole, with empty and large frames intact")
    func multipartRoundTrip() throws {
        let context = ZMQContext()
        let a = try ZMQSocket(context, type: .pair)
        let b = try ZMQSocket(context, type: .pair)
        try a.bind("inproc://roundtrip")
        try b.connect("inproc://roundtrip")
        let big = [UInt8](repeating: 7, count: 100_000)
        let frames: [Frame] = [Array("head".utf8), [], big, [1]]
        #expect(try a.send(frames))
        #expect(try b.receive() == frames)
    }

    @Test("receive with dontWait returns nil when nothing is waiting")
    func receiveWouldBlock() throws {
        let context = ZMQContext()
        let a = try ZMQSocket(context, type: .pull)
        try a.bind("inproc://empty")
        #expect(try a.receive(dontWait: true) == nil)
    }

    @Test("a ROUTER with ROUTER_MANDATORY reports an unknown peer as hostUnreachable")
    func routerMandatory() throws {
        let context = ZMQContext()
        let router = try ZMQSocket(context, type: .router)
        try router.set(.routerMandatory(true))
        try router.bind("inproc://mandatory")
        #expect(throws: ZMQError.hostUnreachable) {
            try router.send([Array("nobody".utf8), Array("hi".utf8)], dontWait: true)
        }
    }

    @Test("a DEALER with IMMEDIATE refuses to queue while nothing is connected")
    func immediateRefusesWithoutPeer() throws {
        let context = ZMQContext()
        let dealer = try ZMQSocket(context, type: .dealer)
        try dealer.set(.immediate(true))
        try dealer.connect("tcp://127.0.0.1:1")
        #expect(try dealer.send([[1]], dontWait: true) == false)
    }

    @Test("ROUTER and DEALER exchange messages over TCP with an OS-chosen port")
    func routerDealerOverTCP() throws {
        let context = ZMQContext()
        let router = try ZMQSocket(context, type: .router)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = try router.lastEndpoint()
        #expect(endpoint.hasPrefix("tcp://127.0.0.1:"))
        let dealer = try ZMQSocket(context, type: .dealer)
        try dealer.set(.routingID(Array("me".utf8)))
        try dealer.connect(endpoint)
        try dealer.send([Array("ping".utf8)])
        try router.set(.receiveTimeout(milliseconds: 5000))
        let got = try #require(try router.receive())
        #expect(got == [Array("me".utf8), Array("ping".utf8)])
        try router.send([Array("me".utf8), Array("pong".utf8)])
        try dealer.set(.receiveTimeout(milliseconds: 5000))
        #expect(try dealer.receive() == [Array("pong".utf8)])
    }

    @Test("binding a malformed endpoint throws invalidEndpoint; a used port throws addressInUse")
    func bindErrors() throws {
        let context = ZMQContext()
        let a = try ZMQSocket(context, type: .router)
        #expect(throws: ZMQError.invalidEndpoint) { try a.bind("tcp://127.0.0.1") }
        try a.bind("tcp://127.0.0.1:*")
        let b = try ZMQSocket(context, type: .router)
        #expect(throws: ZMQError.addressInUse) { try b.bind(try a.lastEndpoint()) }
    }

    @Test("an option value libzmq refuses is an invalid argument, not an invalid endpoint")
    func badOptionValue() throws {
        let socket = try ZMQSocket(ZMQContext(), type: .dealer)
        #expect(throws: ZMQError.invalidArgument) { try socket.set(.linger(milliseconds: -5)) }
        #expect(throws: ZMQError.invalidEndpoint) { try socket.connect("tcp://nowhere") }
    }

    @Test("a monitor reports a connection and its loss")
    func monitorEvents() throws {
        let context = ZMQContext()
        let server = try ZMQSocket(context, type: .router, linger: 0)
        try server.bind("tcp://127.0.0.1:*")
        let client = try ZMQSocket(context, type: .dealer, linger: 0)
        let monitor = try client.monitor([.connected, .disconnected])
        try monitor.set(.receiveTimeout(milliseconds: 10_000))
        try client.connect(try server.lastEndpoint())
        #expect(try monitor.receiveMonitorEvent()?.kind == .connected)
        server.close()
        #expect(try monitor.receiveMonitorEvent()?.kind == .disconnected)
        monitor.close()
        client.close()
    }

    @Test("every typed option is accepted by libzmq, including the undeclared ZAP_ENFORCE_DOMAIN")
    func optionsApply() throws {
        let context = ZMQContext()
        let router = try ZMQSocket(context, type: .router)
        let keys = try CurveKeyPair.generate()
        let options: [SocketOption] = [
            .linger(milliseconds: 0), .routerMandatory(true), .routerHandover(true), .maxMessageSize(bytes: 1 << 20),
            .heartbeatInterval(milliseconds: 1000), .heartbeatTimeout(milliseconds: 3000), .heartbeatTTL(milliseconds: 3000),
            .reconnectInterval(milliseconds: 100), .reconnectIntervalMax(milliseconds: 2000), .immediate(true),
            .sendHighWaterMark(1000), .receiveHighWaterMark(1000), .sendTimeout(milliseconds: 10), .receiveTimeout(milliseconds: 10),
            .curveServer(true), .curveSecretKey(try #require(z85DecodeKey(keys.secretKey))),
            .zapDomain("drover"), .zapEnforceDomain(true),
        ]
        for option in options { try router.set(option) }
        let sub = try ZMQSocket(context, type: .sub)
        try sub.set(.subscribe([]))
        try sub.set(.curvePublicKey(try #require(z85DecodeKey(keys.publicKey))))
        try sub.set(.curveServerKey(try #require(z85DecodeKey(keys.publicKey))))
    }

    @Test("a poller reports a readable file descriptor and a readable socket")
    func pollerSeesFdAndSocket() throws {
        let context = ZMQContext()
        let pull = try ZMQSocket(context, type: .pull)
        try pull.bind("inproc://poll")
        let push = try ZMQSocket(context, type: .push)
        try push.connect("inproc://poll")
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        var poller = ZMQPoller()
        let s = poller.add(pull)
        let f = poller.add(fileDescriptor: fds[0])
        #expect(try poller.poll(timeout: 0) == [false, false])
        try push.send([[42]])
        var one: UInt8 = 1
        _ = write(fds[1], &one, 1)
        let ready = try poller.poll(timeout: 5000)
        #expect(ready[f])
        if !ready[s] { #expect(try poller.poll(timeout: 5000)[s]) }
    }

    @Test("shutting the context down wakes a blocked receive with contextTerminated")
    func shutdownWakesReceive() throws {
        let context = ZMQContext()
        let pull = try ZMQSocket(context, type: .pull)
        try pull.bind("inproc://shutdown")
        context.shutdown()
        #expect(throws: ZMQError.contextTerminated) { try pull.receive() }
    }

    @Test("Z85 keys decode to 32 bytes; anything else is refused")
    func z85() throws {
        let keys = try CurveKeyPair.generate()
        #expect(keys.publicKey.count == 40)
        #expect(z85DecodeKey(keys.publicKey)?.count == 32)
        #expect(z85DecodeKey("short") == nil)
    }
}

#if canImport(Glibc)
import Glibc
#endif
