import Foundation
import Testing

extension ProcessTests {
    /// `drover worker --serve`: long-lived handler processes, end to end.
    @Suite("Long-lived handler processes (--serve)")
    struct ServeTests {
        /// The complete Python handler from docs/HANDLERS.md.
        static let pythonLines = "python3 -c 'import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)'"

        @Test("a Python handler under --serve answers 2,000 items from two long-lived processes; a drain closes them")
        func pythonHandler() throws {
            let sandbox = try Sandbox("serve")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let worker = try sandbox.worker("w", broker: broker, ["--threads", "2", "--serve", Self.pythonLines])
            let total = 2000
            let sent = try sandbox.run(["send", "--broker", broker, "--wait"],
                                       stdin: (1...total).map { "item \($0)" }.joined(separator: "\n"), timeout: 120)
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(Set(sent.lines) == Set((1...total).map { "ITEM \($0)" }))
            let started = worker.stderr.components(separatedBy: "handler process started").count - 1
            #expect((1...2).contains(started), "one process per handler thread at most, not one per item: \(started)")
            let handlers = childProcesses(of: worker.pid)
            #expect(!handlers.isEmpty)
            worker.signal(SIGTERM)
            #expect(worker.wait(seconds: 30) == 0, "\(worker.stderr.suffix(2000))")
            #expect(handlers.allSatisfy { !isRunning($0) }, "the handler processes exited with the worker")
        }

        @Test("a handler process that exits fails the item it held, which is retried on a new process; its stderr reaches the log")
        func dyingHandler() throws {
            let sandbox = try Sandbox("serve-dying")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker(["--retry-base-ms", "20"])
            // Dies the first time it reads "b" (a marker file remembers), saying so on stderr.
            let marker = sandbox.path("died")
            let handler = "while IFS= read -r l; do if [ \"$l\" = b ] && [ ! -e \(marker) ]; then touch \(marker); echo dying on b >&2; exit 3; fi; echo \"$l\"; done"
            let worker = try sandbox.worker("w", broker: broker, ["--threads", "1", "--serve", handler])
            let sent = try sandbox.run(["send", "--broker", broker, "--wait", "a", "b", "c"], timeout: 60)
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(Set(sent.lines) == ["a", "b", "c"])
            #expect(worker.stderr.contains("handler process ended; starting another when needed"))
            #expect(worker.stderr.contains("handler: dying on b"), "the handler's stderr is in the worker's log")
            #expect(worker.stderr.contains("the handler process exited with status 3"))
        }
    }
}

extension ProcessTests.ServeTests {
    @Test("a handler that cannot start shows in drover status and the broker's log, not only the worker's")
    func keepsDyingInStatus() throws {
        let sandbox = try Sandbox("serve-dying")
        defer { sandbox.tearDown() }
        let (broker, endpoint) = try sandbox.broker(["--max-deliveries", "5", "--retry-base-ms", "20"])
        _ = try sandbox.worker("w", broker: endpoint, ["--threads", "1", "--serve", "echo cannot start >&2; exit 3"])
        let sent = try sandbox.run(["send", "--broker", endpoint, "doomed"])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(sandbox.eventually(seconds: 30) { broker.stderr.contains("a worker's handler processes keep dying") },
                "\(broker.stderr.suffix(2000))")
        let status = try sandbox.run(["status", "--broker", endpoint])
        #expect(status.stdout.contains("KEEPS DYING"), "\(status.stdout)")
        #expect(status.stdout.contains("the handler process exited with status 3"), "\(status.stdout)")
        let json = try sandbox.run(["status", "--broker", endpoint, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let worker = try #require((object["workers"] as? [[String: Any]])?.first)
        #expect((worker["handlerDeathsInARow"] as? Int ?? 0) >= 3)
        #expect((worker["handlerRestarts"] as? Int ?? 0) >= 3)
    }

    @Test("--item-timeout: a handler that hangs is stopped, the item is retried and then dead-lettered as timed out")
    func itemTimeout() throws {
        let sandbox = try Sandbox("item-timeout")
        defer { sandbox.tearDown() }
        let (_, broker) = try sandbox.broker(["--max-deliveries", "2", "--retry-base-ms", "20"])
        _ = try sandbox.worker("w", broker: broker, ["--threads", "1", "--item-timeout", "0.5", "--exec", "sleep 60"])
        let sent = try sandbox.run(["send", "--broker", broker, "--wait", "stuck"], timeout: 60)
        #expect(sent.status == 1)
        #expect(sent.stderr.contains("dead-lettered after 2 failed deliveries: command timed out after 0.5 s (worker --item-timeout)"),
                "\(sent.stderr)")
        let bad = try sandbox.run(["worker", "--broker", broker, "--echo", "--item-timeout", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("--item-timeout must be a number of seconds above 0"))
    }

    @Test("send --item-timeout: the producer's limit reaches a worker that has none, and the smaller of two wins")
    func producerItemTimeout() throws {
        let sandbox = try Sandbox("send-item-timeout")
        defer { sandbox.tearDown() }
        let (_, broker) = try sandbox.broker(["--max-deliveries", "1"])
        // The worker allows 30 s; the producer 0.5 s: the producer's wins.
        _ = try sandbox.worker("w", broker: broker, ["--threads", "2", "--item-timeout", "30", "--exec", "read l; [ \"$l\" = slow ] && sleep 60; echo \"$l\""])
        let sent = try sandbox.run(["send", "--broker", broker, "--wait", "--item-timeout", "0.5", "slow", "quick"], timeout: 60)
        #expect(sent.status == 1)
        #expect(sent.lines == ["quick"], "the quick item is not affected")
        #expect(sent.stderr.contains("command timed out after 0.5 s (send --item-timeout)"), "\(sent.stderr)")
        let bad = try sandbox.run(["send", "--broker", broker, "--item-timeout", "0", "x"])
        #expect(bad.status != 0 && bad.stderr.contains("--item-timeout must be a number of seconds above 0"))
    }
}
