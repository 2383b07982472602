import Foundation
import Testing

/// A ledger line per execution, written by the `--exec` handler: item, attempt, worker.
struct Ledger {
    struct Entry: Hashable {
        var item: Int
        var attempt: Int
        var worker: String
    }

    let path: String

    /// The handler command that records each execution, then returns the item (after `delay`).
    func handler(delay: String = "0") -> String {
        "read x; echo \"$x $DROVER_ATTEMPT $DROVER_WORKER\" >> \(path); sleep \(delay); echo \"$x\""
    }

    var entries: [Entry] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, let item = Int(parts[0]), let attempt = Int(parts[1]) else { return nil }
            return Entry(item: item, attempt: attempt, worker: String(parts[2]))
        }
    }
}

/// Reads the broker's counters through `drover status --json`.
func brokerCounters(_ sandbox: Sandbox, _ broker: String) throws -> [String: Int] {
    (try brokerStatus(sandbox, broker)["counters"] as? [String: Int]) ?? [:]
}

extension ProcessTests {
    /// Fault injection against real processes: kills, pauses, restarts.
    @Suite("Nothing lost under faults")
    struct ReliabilityTests {
        @Test("kill -9 a random worker every 2 s while 20,000 items run through 3 workers: lost 0, unexpected 0, duplicates bounded")
        func killWorkersRepeatedly() throws {
            let sandbox = try Sandbox("kill")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker(["--max-deliveries", "100"])
            let ledger = Ledger(path: sandbox.path("ledger"))
            let threads = 2, lookahead = 1
            func startWorker(_ name: String) throws -> DroverProcess {
                try sandbox.worker(name, broker: broker, ["--threads", "\(threads)", "--lookahead", "\(lookahead)", "--exec", ledger.handler()])
            }
            var workers = try ["w1", "w2", "w3"].map(startWorker)

            let total = 20_000
            let producer = try sandbox.start("producer", ["send", "--broker", broker, "--wait"],
                                             stdin: (1...total).map(String.init).joined(separator: "\n"))
            var kills = 0
            var generation = 0
            while producer.wait(seconds: 2) == nil {
                guard kills < 40 else { break }
                let victim = Int.random(in: 0..<workers.count)
                workers[victim].signal(SIGKILL)
                _ = workers[victim].wait(seconds: 10)
                kills += 1
                generation += 1
                workers[victim] = try startWorker("w\(victim + 1)-\(generation)")
            }
            #expect(producer.wait(seconds: 120) == 0, "\(producer.stderr.suffix(2000))")
            #expect(kills >= 3, "the run lasted long enough for several kills (\(kills))")

            let results = producer.stdout.split(separator: "\n").compactMap { Int($0) }
            let completed = Set(results)
            let lost = Set(1...total).subtracting(completed)
            let executions = ledger.entries
            let unexpected = Set(executions.map(\.item)).union(completed).subtracting(1...total)
            let duplicates = executions.count - Set(executions.map(\.item)).count
            #expect(lost.isEmpty, "lost \(lost.count) items")
            #expect(unexpected.isEmpty)
            #expect(results.count == total, "each outcome reported once")
            #expect(duplicates <= kills * (threads + lookahead), "duplicated executions \(duplicates) for \(kills) kills")
            print("kill test: \(kills) kills, \(duplicates) duplicated executions (bound \(kills * (threads + lookahead)))")
        }

        @Test("a worker paused mid-item has the item redelivered; its late outcome is rejected; the item completes once")
        func pausedWorker() throws {
            let sandbox = try Sandbox("sigstop")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let ledger = Ledger(path: sandbox.path("ledger"))
            let workers = try ["a", "b"].map { try sandbox.worker($0, broker: broker, ["--threads", "1", "--exec", ledger.handler(delay: "1")]) }
            let producer = try sandbox.start("producer", ["send", "--broker", broker, "--wait", "7"])
            #expect(sandbox.eventually(seconds: 20) { ledger.entries.count == 1 })
            let first = try #require(ledger.entries.first)
            let paused = try #require(workers.first { $0.name == first.worker })
            paused.signal(SIGSTOP)
            // Redelivered to the other worker within the liveness window plus a heartbeat.
            #expect(sandbox.eventually(seconds: 10) { ledger.entries.count == 2 })
            #expect(producer.wait(seconds: 20) == 0)
            paused.signal(SIGCONT)
            #expect(sandbox.eventually(seconds: 10) { ((try? brokerCounters(sandbox, broker))?["staleOutcomes"] ?? 0) >= 1 },
                    "the paused worker's late outcome was rejected")
            let counters = try brokerCounters(sandbox, broker)
            #expect(counters["completed"] == 1)
            #expect(producer.stdout == "7\n", "one result")
            #expect(ledger.entries.map(\.attempt) == [1, 2])
        }

        @Test("a 10-second item on a live worker is delivered once")
        func longItemNotRedelivered() throws {
            let sandbox = try Sandbox("long")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let ledger = Ledger(path: sandbox.path("ledger"))
            _ = try sandbox.worker("slow", broker: broker, ["--threads", "1", "--exec", ledger.handler(delay: "10")])
            _ = try sandbox.worker("idle", broker: broker, ["--threads", "1", "--exec", ledger.handler()])
            let sent = try sandbox.run(["send", "--broker", broker, "--wait", "1"], timeout: 60)
            #expect(sent.status == 0)
            #expect(ledger.entries == [Ledger.Entry(item: 1, attempt: 1, worker: "slow")])
            #expect(try brokerCounters(sandbox, broker)["redelivered"] == 0)
        }

        @Test("exit sent immediately after workers start, 20 times in a row: every worker exits, every time")
        func exitRightAfterStart() throws {
            for round in 1...20 {
                let sandbox = try Sandbox("exit-now-\(round)")
                defer { sandbox.tearDown() }
                let (_, broker) = try sandbox.broker()
                let (_, publish, commands) = try sandbox.controller(broker: broker)
                let viaControl = try sandbox.start("w1", ["worker", "--broker", broker, "--control", publish, "--echo"])
                let viaBroker = try sandbox.start("w2", ["worker", "--broker", broker, "--echo"])
                let exit = try sandbox.run(["exit", "--controller", commands])
                #expect(exit.status == 0, "round \(round): \(exit.stderr)")
                #expect(viaControl.wait(seconds: 20) == 0, "round \(round): \(viaControl.stderr)")
                #expect(viaBroker.wait(seconds: 20) == 0, "round \(round): \(viaBroker.stderr)")
            }
        }

        @Test("exit while a worker's broker connection is down: it finishes, waits for the broker, says goodbye, exits 0")
        func exitWhileBrokerDown() throws {
            let sandbox = try Sandbox("exit-down")
            defer { sandbox.tearDown() }
            let (brokerProcess, broker) = try sandbox.broker()
            let (_, publish, commands) = try sandbox.controller(broker: broker)
            let worker = try sandbox.worker("w", broker: broker, control: publish, ["--echo"])
            brokerProcess.signal(SIGKILL)
            _ = brokerProcess.wait(seconds: 10)
            let exit = try sandbox.run(["exit", "--controller", commands, "--no-wait"])
            #expect(exit.status == 0, "\(exit.stderr)")
            #expect(sandbox.eventually(seconds: 10) { worker.stderr.contains("waiting for the broker to come back to say goodbye") })
            #expect(worker.exitStatus == nil, "it waits for the broker rather than leaving without a word")
            _ = try sandbox.broker(["--bind", broker])
            #expect(worker.wait(seconds: 20) == 0, "\(worker.stderr)")
        }

        @Test("the broker killed and restarted during send --wait: workers and the producer reconnect and every item completes")
        func brokerRestartDuringSend() throws {
            let sandbox = try Sandbox("restart")
            defer { sandbox.tearDown() }
            let (brokerProcess, broker) = try sandbox.broker()
            let ledger = Ledger(path: sandbox.path("ledger"))
            let workers = try ["w1", "w2"].map { try sandbox.worker($0, broker: broker, ["--threads", "2", "--exec", ledger.handler(delay: "0.005")]) }
            let total = 2000
            let producer = try sandbox.start("producer", ["send", "--broker", broker, "--wait"],
                                             stdin: (1...total).map(String.init).joined(separator: "\n"))
            #expect(sandbox.eventually(seconds: 30) { ledger.entries.count >= 300 })
            brokerProcess.signal(SIGKILL)
            _ = brokerProcess.wait(seconds: 10)
            let (restarted, _) = try sandbox.broker(["--bind", broker])
            let finished = producer.wait(seconds: 120)
            #expect(finished == 0, "\(producer.stderr.suffix(2000))")
            if finished == nil {
                let status = try sandbox.run(["status", "--broker", broker])
                Issue.record("broker status: \(status.stdout)\nbroker log: \(restarted.stderr.suffix(3000))\nworkers: \(workers.map { $0.stderr.suffix(1500) })")
            }
            let results = producer.stdout.split(separator: "\n").compactMap { Int($0) }
            let missing = Set(1...total).subtracting(results)
            #expect(missing.isEmpty && results.count == total, "every item completed, each reported once: \(missing.count) missing, \(results.count) results")
            #expect(producer.stderr.contains("the broker restarted; offering every unfinished item again"))
            for worker in workers {
                #expect(worker.exitStatus == nil, "\(worker.name) reconnected without a restart")
                // Every worker logs "registered with the broker" at start; only a re-registration
                // says this.
                #expect(worker.stderr.contains("registering again"), "\(worker.name): \(worker.stderr.suffix(1500))")
                #expect(restarted.stderr.contains("worker=\(worker.name)"), "the restarted broker saw \(worker.name) join")
            }
        }

        @Test("SIGTERM drains one worker; a second SIGTERM stops it at once and its item is redelivered")
        func secondSigtermStopsAtOnce() throws {
            let sandbox = try Sandbox("sigterm")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let ledger = Ledger(path: sandbox.path("ledger"))
            let stuck = try sandbox.worker("stuck", broker: broker, ["--threads", "1", "--exec", ledger.handler(delay: "30")])
            let producer = try sandbox.start("producer", ["send", "--broker", broker, "--wait", "5"])
            #expect(sandbox.eventually(seconds: 20) { ledger.entries.count == 1 })
            stuck.signal(SIGTERM)
            #expect(sandbox.eventually(seconds: 10) { stuck.stderr.contains("draining") })
            #expect(stuck.exitStatus == nil, "the first SIGTERM lets the running item finish")
            stuck.signal(SIGTERM)
            #expect(stuck.wait(seconds: 10) == 2)
            _ = try sandbox.worker("fresh", broker: broker, ["--threads", "1", "--exec", ledger.handler()])
            #expect(producer.wait(seconds: 30) == 0)
            #expect(producer.stdout == "5\n")
            #expect(ledger.entries.map(\.attempt) == [1, 2])
            #expect(ledger.entries.last?.worker == "fresh")
        }
    }
}
