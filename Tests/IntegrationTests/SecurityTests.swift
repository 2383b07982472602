import Foundation
import DroverProtocol
import Testing
import ZeroMQ

extension ProcessTests {
    /// Keys (CURVE with a ZAP handler), roles bound to keys, and what is refused.
    @Suite("Security: keys and roles")
    struct SecurityTests {
        @Test("a fleet with keys end to end: producer, worker, controller and an admin's exit")
        func securedFleet() throws {
            let sandbox = try Sandbox("secured")
            defer { sandbox.tearDown() }
            let keys = try FleetKeys(sandbox)
            let (broker, endpoint) = try sandbox.broker(["--in-memory"] + keys.broker)
            #expect(broker.stderr.contains("secured with keys"))
            let controller = try sandbox.controller(broker: endpoint, keys.controller)
            let worker = try sandbox.worker("w", broker: endpoint, control: controller.publish, ["--echo"] + keys.client("worker", controller: true))
            let send = try sandbox.run(["send", "--broker", endpoint, "--wait", "one", "two"] + keys.client("producer"))
            #expect(send.status == 0, "\(send.stderr)")
            #expect(Set(send.lines) == ["one", "two"])
            // Through the controller, which asks the broker with its own key.
            var status = Sandbox.Finished(status: -1, stdout: "", stderr: "")
            #expect(try sandbox.eventually(seconds: 10) {
                status = try sandbox.run(["status", "--controller", controller.commands, "--json"] + keys.client("admin", broker: false, controller: true))
                return status.status == 0
            }, "\(status.stderr)")
            #expect(status.stdout.contains("\"mode\" : \"keys\""), "\(status.stdout)")
            let exit = try sandbox.run(["exit", "--controller", controller.commands, "--deadline", "5"] + keys.client("admin", broker: false, controller: true))
            #expect(exit.status == 0, "\(exit.stderr)")
            #expect(worker.wait(seconds: 30) == 0, "the worker left with the fleet: \(worker.stderr.suffix(1000))")
        }

        @Test("refused: an unknown key, a plaintext client, a wrong broker key, a worker key submitting, a producer key purging or exiting; the broker keeps serving")
        func refusals() throws {
            let sandbox = try Sandbox("refusals")
            defer { sandbox.tearDown() }
            let keys = try FleetKeys(sandbox, extra: ["stranger": "producer"])
            let (broker, endpoint) = try sandbox.broker(["--in-memory"] + keys.broker)
            let controller = try sandbox.controller(broker: endpoint, keys.controller)

            let stranger = try sandbox.run(["send", "--broker", endpoint, "x"] + keys.client("stranger"))
            #expect(stranger.status != 0 && stranger.stderr.contains("the broker refused this key"), "\(stranger.stderr)")
            let plaintext = try sandbox.run(["send", "--broker", endpoint, "x"])
            #expect(plaintext.status != 0 && plaintext.stderr.contains("the broker requires keys"), "\(plaintext.stderr)")
            let wrongServer = try sandbox.run(["send", "--broker", endpoint, "--timeout", "2", "x", "--key", keys.secret("producer"),
                                               "--broker-key", keys.pub("admin")])
            #expect(wrongServer.status != 0 && wrongServer.stderr.contains("does not match --broker-key"), "\(wrongServer.stderr)")
            let workerSubmits = try sandbox.run(["send", "--broker", endpoint, "x"] + keys.client("worker"))
            #expect(workerSubmits.status != 0 && workerSubmits.stderr.contains("a worker key may not say hello as a producer"), "\(workerSubmits.stderr)")
            let producerPurges = try sandbox.run(["dlq", "purge", "--broker", endpoint] + keys.client("producer"))
            #expect(producerPurges.status != 0 && producerPurges.stderr.contains("may not send deadLetters"), "\(producerPurges.stderr)")
            let producerExits = try sandbox.run(["exit", "--controller", controller.commands] + keys.client("producer", broker: false, controller: true))
            #expect(producerExits.status != 0 && producerExits.stderr.contains("only an admin key may make the fleet exit"), "\(producerExits.stderr)")

            // None of it got an item in, and the broker serves an authorized producer as before.
            let good = try sandbox.run(["send", "--broker", endpoint, "fine"] + keys.client("producer"))
            #expect(good.status == 0, "\(good.stderr)")
            let status = try brokerStatus(sandbox, endpoint, keys.client("admin"))
            #expect((status["counters"] as? [String: Int])?["accepted"] == 1, "only the authorized producer's item")
            let security = status["security"] as? [String: Any] ?? [:]
            #expect((security["refusedHandshakes"] as? Int ?? 0) >= 3, "stranger, plaintext, wrong server key: \(security)")
            #expect((security["refusedMessages"] as? Int ?? 0) >= 2, "the worker key's hello, the producer key's purge: \(security)")
            let strangerKey = try publicKey(keys.pub("stranger"))
            #expect(broker.stderr.contains("refused a connection") && broker.stderr.contains(strangerKey),
                    "the unknown key is logged: \(broker.stderr.suffix(2000))")
            #expect(broker.exitStatus == nil)
        }

        @Test("revocation: a key removed from --authorized-keys is refused after SIGHUP, on new connections and on the open ones")
        func revocation() throws {
            let sandbox = try Sandbox("revoke")
            defer { sandbox.tearDown() }
            let keys = try FleetKeys(sandbox, extra: ["late": "worker"])
            let (broker, endpoint) = try sandbox.broker(["--in-memory", "--heartbeat-ms", "200"] + keys.broker)
            let ledger = Ledger(path: sandbox.path("ledger"))
            let worker = try sandbox.worker("w", broker: endpoint, ["--exec", ledger.handler()] + keys.client("worker"))
            #expect(try sandbox.run(["send", "--broker", endpoint, "--wait", "1"] + keys.client("producer")).status == 0)

            try FileManager.default.removeItem(atPath: "\(keys.authorized)/producer.pub")
            try FileManager.default.removeItem(atPath: "\(keys.authorized)/worker.pub")
            broker.signal(SIGHUP)
            #expect(sandbox.eventually(seconds: 10) { broker.stderr.contains("authorized keys read again") })

            let refused = try sandbox.run(["send", "--broker", endpoint, "2"] + keys.client("producer"))
            #expect(refused.status != 0 && refused.stderr.contains("refused this key"), "\(refused.stderr)")
            // The worker's open connection: its messages are refused, so the broker drops it.
            #expect(sandbox.eventually(seconds: 20) { ((try? brokerStatus(sandbox, endpoint, keys.client("admin")))?["workers"] as? [Any])?.isEmpty == true },
                    "the revoked worker is dropped")
            #expect(broker.stderr.contains("no longer authorized"))
            #expect(ledger.entries.map(\.item) == [1], "nothing ran after the revocation")
            #expect(worker.exitStatus == nil, "the worker keeps trying, in case its key comes back")

            // Authorized again: the same worker process registers, with no restart.
            try FileManager.default.copyItem(atPath: keys.pub("worker"), toPath: "\(keys.authorized)/worker.pub")
            broker.signal(SIGHUP)
            #expect(sandbox.eventually(seconds: 20) { ((try? brokerStatus(sandbox, endpoint, keys.client("admin")))?["workers"] as? [Any])?.count == 1 },
                    "the worker is back: \(worker.stderr.suffix(1500))")
            // A worker refused at the handshake (libzmq gives such a connection up) redials, and
            // gets in once its key is authorized.
            let late = try sandbox.start("late", ["worker", "--broker", endpoint, "--name", "late", "--echo"] + keys.client("late"))
            #expect(sandbox.eventually(seconds: 10) { late.stderr.contains("refused this key") }, "\(late.stderr)")
            try FileManager.default.copyItem(atPath: keys.pub("late"), toPath: "\(keys.authorized)/late.pub")
            broker.signal(SIGHUP)
            #expect(sandbox.eventually(seconds: 20) { ((try? brokerStatus(sandbox, endpoint, keys.client("admin")))?["workers"] as? [Any])?.count == 2 },
                    "the late worker joined: \(late.stderr.suffix(1500))")
        }

        @Test("a secured run's traffic, captured on the wire, holds none of the payload bytes in clear (and a plaintext run's does)")
        func encryptedOnTheWire() throws {
            let canary = "drover-canary-\(UInt64.random(in: 1...UInt64.max))"
            func capture(secured: Bool) throws -> Data {
                let sandbox = try Sandbox(secured ? "wire-secured" : "wire-plain")
                defer { sandbox.tearDown() }
                let keys = try FleetKeys(sandbox)
                let (_, endpoint) = try sandbox.broker(["--in-memory"] + (secured ? keys.broker : []))
                let port = endpoint.split(separator: ":").last.map(String.init) ?? ""
                let file = sandbox.path("wire.pcap")
                let dump = try Tcpdump(file: file, filter: "tcp port \(port)")
                defer { dump.stop() }
                _ = try sandbox.worker("w", broker: endpoint, ["--echo"] + (secured ? keys.client("worker") : []))
                let send = try sandbox.run(["send", "--broker", endpoint, "--wait", canary] + (secured ? keys.client("producer") : []))
                #expect(send.status == 0 && send.stdout.contains(canary), "\(send.stderr)")
                // A marker sent after the run: once the file holds it, it holds every packet before.
                try dump.mark(port: port)
                dump.stop()
                return (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
            }
            let plain = try capture(secured: false)
            #expect(plain.range(of: Data(canary.utf8)) != nil, "the capture works: a plaintext run shows the payload (\(plain.count) bytes captured)")
            let secured = try capture(secured: true)
            #expect(secured.count > 1000, "the secured run was captured (\(secured.count) bytes)")
            #expect(secured.range(of: Data(canary.utf8)) == nil, "no payload in clear")
        }
    }
}

/// The public key in a certificate file.
func publicKey(_ path: String) throws -> String {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    guard let line = text.split(separator: "\n").first(where: { $0.contains("public-key") }),
          let start = line.firstIndex(of: "\""), let end = line.lastIndex(of: "\""), start < end else { throw HarnessError("no public key in \(path)") }
    return String(line[line.index(after: start)..<end])
}

/// Broker status as JSON through `drover status --json`, with client flags (keys).
func brokerStatus(_ sandbox: Sandbox, _ broker: String, _ flags: [String]) throws -> [String: Any] {
    let status = try sandbox.run(["status", "--broker", broker, "--json"] + flags)
    return (try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]) ?? [:]
}

/// `tcpdump` writing packets on loopback to a file, from when it says it listens to ``stop()``.
final class Tcpdump: @unchecked Sendable {
    private let process = Process()
    private let errors = Pipe()
    private let file: String
    private var stopped = false

    init(file: String, filter: String) throws {
        self.file = file
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-s", "0", "-Z", "root", "-w", file, filter]
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch { throw HarnessError("cannot run tcpdump (scripts/setup installs it): \(error)") }
        // It says "listening on lo" once capturing: the event to wait for.
        var said = Data()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, String(decoding: said, as: UTF8.self).contains("listening on") == false {
            let chunk = errors.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            said.append(chunk)
        }
        guard String(decoding: said, as: UTF8.self).contains("listening on") else {
            process.terminate()
            throw HarnessError("tcpdump did not start: \(String(decoding: said, as: UTF8.self))")
        }
    }

    /// Sends a marker to `port` on loopback (over a connection of its own, which the broker
    /// drops) and waits until the capture holds it.
    func mark(port: String) throws {
        let marker = "drover-capture-marker-\(UInt64.random(in: 1...UInt64.max))"
        let sender = Process()
        sender.executableURL = URL(fileURLWithPath: "/bin/bash")
        sender.arguments = ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf %s \(marker) >&3; exec 3>&-"]
        try sender.run()
        sender.waitUntilExit()
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let data = try? Data(contentsOf: URL(fileURLWithPath: file)), data.range(of: Data(marker.utf8)) != nil { return }
            // Polling a file: tcpdump gives no other sign that it has written a packet.
            usleep(50_000)
        }
        throw HarnessError("the capture never showed the marker sent after the run")
    }

    /// Stops the capture and waits for tcpdump to exit. SIGKILL: a child of the test process
    /// inherits its blocked signals, so tcpdump never sees SIGINT or SIGTERM; with -U each
    /// packet is in the file as soon as it is captured, so nothing captured is lost.
    func stop() {
        guard !stopped else { return }
        stopped = true
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

extension ProcessTests.SecurityTests {
    @Test("past --max-connections new handshakes are refused; closing connections makes room again")
    func connectionCap() throws {
        let sandbox = try Sandbox("max-connections")
        defer { sandbox.tearDown() }
        let (broker, endpoint) = try sandbox.broker(["--in-memory", "--max-connections", "3"])
        let context = ZMQContext()
        var admitted: [ZMQSocket] = [], refused = 0
        // One connection after another, each waiting for the broker's answer to its hello.
        for _ in 0..<6 {
            let socket = try ZMQSocket(context, type: .dealer, linger: 0)
            try socket.connect(endpoint)
            _ = try socket.send(Codec.encode(.hello(Hello(role: .producer, name: "cap"))))
            var poller = ZMQPoller()
            _ = poller.add(socket)
            if try poller.poll(timeout: 3000)[0], let frames = try socket.receive(dontWait: true), case .welcome? = try? Codec.decode(frames) {
                admitted.append(socket)
            } else {
                refused += 1
                socket.close()
            }
        }
        #expect(admitted.count <= 3 && admitted.count >= 2, "admitted \(admitted.count) of 6 under a cap of 3")
        #expect(refused >= 3)
        #expect(broker.stderr.contains("connections are open, the most this server takes is 3"))
        for socket in admitted { socket.close() }
        // With the connections closed, a new client gets in.
        #expect(sandbox.eventually(seconds: 10) { (try? sandbox.run(["status", "--broker", endpoint]).status) == 0 })
        context.terminate()
    }
}
