import DroverProtocol
import Foundation
import Testing
import ZeroMQ

@Suite("Bad input gets a clear error")
struct BadInputTests {
    @Test("an unknown flag is named, with a non-zero exit")
    func unknownFlag() throws {
        let sandbox = try Sandbox("flag")
        defer { sandbox.tearDown() }
        let result = try sandbox.run(["worker", "--broker", "tcp://127.0.0.1:5555", "--echo", "--bogus"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("Unknown option '--bogus'"))
    }

    @Test("a malformed endpoint says what is wrong and how to write it")
    func malformedEndpoint() throws {
        let sandbox = try Sandbox("endpoint")
        defer { sandbox.tearDown() }
        let result = try sandbox.run(["send", "--broker", "localhost:5555", "x"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("has no transport; write it like tcp://HOST:5555"))
    }

    @Test("an unreachable broker or controller is reported within seconds, never a silent hang")
    func unreachable() throws {
        let sandbox = try Sandbox("unreachable")
        defer { sandbox.tearDown() }
        let started = Date()
        let send = try sandbox.run(["send", "--broker", "tcp://127.0.0.1:1", "--timeout", "2", "x"], timeout: 30)
        #expect(send.status != 0)
        #expect(send.stderr.contains("no answer from the broker at tcp://127.0.0.1:1 within 2 s"))
        let exit = try sandbox.run(["exit", "--controller", "tcp://127.0.0.1:1", "--timeout", "2"], timeout: 30)
        #expect(exit.status != 0)
        #expect(exit.stderr.contains("no answer from the controller"))
        let status = try sandbox.run(["status", "--broker", "tcp://127.0.0.1:1", "--timeout", "2"], timeout: 30)
        #expect(status.status != 0)
        #expect(Date().timeIntervalSince(started) < 25)
    }

    @Test("an item over the broker's maximum is refused by name; the broker keeps accepting others")
    func oversizeItem() throws {
        let sandbox = try Sandbox("oversize")
        defer { sandbox.tearDown() }
        let (_, broker) = try sandbox.broker(["--max-item-size", "100"])
        let big = try sandbox.run(["send", "--broker", broker, "small", String(repeating: "x", count: 200)])
        #expect(big.status != 0)
        #expect(big.stderr.contains("item 2 was not accepted: item is 200 bytes; the broker accepts at most 100"))
        #expect(big.stderr.contains("1 accepted"))
        let ok = try sandbox.run(["send", "--broker", broker, "fine"])
        #expect(ok.status == 0, "\(ok.stderr)")
    }

    @Test("an --exec command that does not exist is refused at start-up")
    func missingExecCommand() throws {
        let sandbox = try Sandbox("exec")
        defer { sandbox.tearDown() }
        let result = try sandbox.run(["worker", "--broker", "tcp://127.0.0.1:5555", "--exec", "no-such-command-xyz --flag"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--exec command \"no-such-command-xyz\" was not found"))
    }

    @Test("a handler is required, and only one")
    func handlerChoice() throws {
        let sandbox = try Sandbox("handler")
        defer { sandbox.tearDown() }
        let none = try sandbox.run(["worker", "--broker", "tcp://127.0.0.1:5555"])
        #expect(none.status != 0)
        #expect(none.stderr.contains("give exactly one handler"))
    }

    @Test("malformed frames and unknown protocol versions are answered with an error; the broker keeps serving")
    func malformedFrames() throws {
        let sandbox = try Sandbox("frames")
        defer { sandbox.tearDown() }
        let (brokerProcess, broker) = try sandbox.broker()
        let context = ZMQContext()
        let socket = try ZMQSocket(context, type: .dealer, linger: 0)
        try socket.set(.receiveTimeout(milliseconds: 10_000))
        try socket.connect(broker)

        try socket.send([Array("junk".utf8)])
        guard case .error(let code1, _)? = try socket.receive().flatMap({ try? Codec.decode($0) }) else {
            Issue.record("expected an error reply to junk"); return
        }
        #expect(code1 == .malformed)

        try socket.send([Array("DRV".utf8) + [9], [0x03]])
        guard case .error(let code2, let text2)? = try socket.receive().flatMap({ try? Codec.decode($0) }) else {
            Issue.record("expected an error reply to version 9"); return
        }
        #expect(code2 == .unsupportedVersion)
        #expect(text2.contains("version 9"))

        // The controller answers the same way: another version gets error 1 naming both.
        let controller = try sandbox.controller(broker: broker)
        let client = try ZMQSocket(context, type: .dealer, linger: 0)
        try client.set(.receiveTimeout(milliseconds: 10_000))
        try client.connect(controller.commands)
        try client.send([Array("DRV".utf8) + [1], [0x40]])
        guard case .error(let code4, let text4)? = try client.receive().flatMap({ try? Codec.decode($0) }) else {
            Issue.record("expected the controller's error reply to version 1"); return
        }
        #expect(code4 == .unsupportedVersion)
        #expect(text4.contains("version 1") && text4.contains("version 2"), "\(text4)")

        try socket.send([ProtocolVersion.signature, [0x10], Array("q".utf8)])  // submit without flags
        guard case .error(let code3, _)? = try socket.receive().flatMap({ try? Codec.decode($0) }) else {
            Issue.record("expected an error reply to a short submit"); return
        }
        #expect(code3 == .malformed)

        let ok = try sandbox.run(["send", "--broker", broker, "still", "works"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(brokerProcess.exitStatus == nil)
        #expect(brokerProcess.stderr.contains("dropped a malformed message"))
    }

    @Test("--version prints the version, and every subcommand's help has an example")
    func versionAndHelp() throws {
        let sandbox = try Sandbox("help")
        defer { sandbox.tearDown() }
        let version = try sandbox.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.contains("wire protocol v2"))
        for command in ["broker", "controller", "worker", "send", "exit", "status", "up"] {
            let help = try sandbox.run([command, "--help"])
            #expect(help.status == 0)
            #expect(help.stdout.contains("Example"), "drover \(command) --help has an example")
        }
    }

    @Test("--log-format json writes one JSON object per line")
    func jsonLogs() throws {
        let sandbox = try Sandbox("json")
        defer { sandbox.tearDown() }
        let (broker, _) = try sandbox.broker(["--log-format", "json"])
        broker.signal(SIGTERM)
        #expect(broker.wait(seconds: 10) == 0)
        let lines = broker.stderr.split(separator: "\n")
        #expect(lines.count >= 2)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
            #expect(object?["role"] == "broker")
            #expect(object?["msg"] != nil && object?["ts"] != nil && object?["level"] != nil)
        }
    }
}
