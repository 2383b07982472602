import DroverProtocol
import Foundation
import Testing

extension ProcessTests {
    /// Whole fleets of real `drover` processes on loopback.
    @Suite("Fleet end to end")
    struct FleetTests {
        @Test("2 workers × 2 threads process 10,000 items exactly once, and every result reaches the producer")
        func tenThousandItemsExactlyOnce() throws {
            let sandbox = try Sandbox("10k")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let w1 = try sandbox.worker("w1", broker: broker, ["--threads", "2", "--echo"])
            let w2 = try sandbox.worker("w2", broker: broker, ["--threads", "2", "--echo"])

            let input = (1...10_000).map(String.init).joined(separator: "\n") + "\n"
            let sent = try sandbox.run(["send", "--broker", broker, "--wait"], stdin: input, timeout: 180)
            #expect(sent.status == 0, "\(sent.stderr)")
            let results = sent.lines.compactMap(Int.init)
            #expect(results.count == 10_000 && Set(results) == Set(1...10_000), "every result once: \(results.count) results")

            w1.signal(SIGTERM)
            w2.signal(SIGTERM)
            #expect(w1.wait(seconds: 30) == 0)
            #expect(w2.wait(seconds: 30) == 0)
            let processed1 = w1.stdout.split(separator: "\n").compactMap { Int($0) }
            let processed2 = w2.stdout.split(separator: "\n").compactMap { Int($0) }
            let processed = processed1 + processed2
            #expect(processed.count == 10_000 && Set(processed) == Set(1...10_000), "every item processed exactly once: \(processed.count) executions")
            #expect(!processed1.isEmpty && !processed2.isEmpty, "both workers took part")
        }

        @Test("lines arriving slowly on stdin each go out at once, without waiting for a full batch or the end")
        func streamingStdin() throws {
            let sandbox = try Sandbox("stream")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            _ = try sandbox.worker("w", broker: broker, ["--exec", "tr a-z A-Z"])
            let input = Pipe()
            let producer = try sandbox.start("producer", ["send", "--broker", broker, "--wait"], stdinPipe: input)
            input.fileHandleForWriting.write(Data("first\n".utf8))
            #expect(sandbox.eventually(seconds: 15) { producer.stdout == "FIRST\n" }, "the first line's result came back while stdin stayed open")
            input.fileHandleForWriting.write(Data("second\n".utf8))
            #expect(sandbox.eventually(seconds: 15) { producer.stdout == "FIRST\nSECOND\n" })
            try input.fileHandleForWriting.close()
            #expect(producer.wait(seconds: 15) == 0, "\(producer.stderr)")
        }

        @Test("a worker's ready file is refreshed every heartbeat, also while its broker is gone (for liveness probes)")
        func readyFileHeartbeat() throws {
            let sandbox = try Sandbox("ready-touch")
            defer { sandbox.tearDown() }
            let (broker, endpoint) = try sandbox.broker(["--heartbeat-ms", "100"])
            _ = try sandbox.worker("w", broker: endpoint, ["--echo", "--heartbeat-ms", "100"])
            let ready = sandbox.path("w.ready")
            func modified() -> Date? { (try? FileManager.default.attributesOfItem(atPath: ready))?[.modificationDate] as? Date }
            let first = try #require(modified())
            #expect(sandbox.eventually(seconds: 10) { (modified() ?? first) > first })
            broker.kill()
            _ = broker.wait(seconds: 10)
            let afterBroker = try #require(modified())
            #expect(sandbox.eventually(seconds: 10) { (modified() ?? afterBroker) > afterBroker }, "still refreshed with no broker")
        }

        @Test("credit: with one slow and one fast worker, the fast one processes most items")
        func fastWorkerTakesMostItems() throws {
            let sandbox = try Sandbox("credit")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let slow = try sandbox.worker("slow", broker: broker, ["--threads", "1", "--lookahead", "1", "--exec", "sleep 0.5; cat"])
            let fast = try sandbox.worker("fast", broker: broker, ["--threads", "1", "--lookahead", "1", "--echo"])

            let sent = try sandbox.run(["send", "--broker", broker, "--wait"] + (1...100).map(String.init), timeout: 120)
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(Set(sent.lines.compactMap(Int.init)) == Set(1...100) && sent.lines.count == 100)
            let byFast = fast.stdout.split(separator: "\n").count
            // Round-robin without credit would give the slow worker 50 items (25 s of work).
            #expect(byFast >= 80, "the fast worker processed \(byFast) of 100")
            slow.signal(SIGTERM)
            fast.signal(SIGTERM)
            #expect(slow.wait(seconds: 30) == 0)
            #expect(fast.wait(seconds: 30) == 0)
        }

        @Test("exit during a run: accepted = processed + handed back, nothing lost, every worker exits 0")
        func exitDuringRun() throws {
            let sandbox = try Sandbox("exit")
            defer { sandbox.tearDown() }
            let (brokerProcess, broker) = try sandbox.broker()
            let (controllerProcess, publish, commands) = try sandbox.controller(broker: broker)
            let ledger = sandbox.path("processed")
            let handler = "read x; echo \"$x\" >> \(ledger); sleep 0.02; echo \"$x\""
            let workers = try (1...2).map { try sandbox.worker("w\($0)", broker: broker, control: publish, ["--threads", "2", "--exec", handler]) }

            let total = 1000
            let sent = try sandbox.run(["send", "--broker", broker], stdin: (1...total).map(String.init).joined(separator: "\n"), timeout: 60)
            #expect(sent.status == 0, "\(sent.stderr)")
            let exit = try sandbox.run(["exit", "--controller", commands, "--deadline", "30"], timeout: 60)
            #expect(exit.status == 0, "\(exit.stdout)\(exit.stderr)")
            #expect(exit.stdout.contains("fleet exited: 2 workers confirmed"))
            for worker in workers { #expect(worker.wait(seconds: 30) == 0, "\(worker.name): \(worker.stderr)") }

            let status = try sandbox.run(["status", "--broker", broker, "--json"])
            let books = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
            let counters = try #require(books["counters"] as? [String: Any])
            let queue = try #require((books["queues"] as? [[String: Any]])?.first)
            let completed = try #require(counters["completed"] as? Int)
            let queued = try #require(queue["queued"] as? Int)
            let processed = ((try? String(contentsOfFile: ledger, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int($0) }
            #expect(Set(processed).count == processed.count, "no item ran twice")
            #expect(processed.count == completed)
            #expect(queue["leased"] as? Int == 0)
            #expect(completed + queued == total, "completed \(completed) + queued \(queued) == \(total)")
            #expect(queued > 0, "the exit came mid-run, so some items were handed back or never started")

            brokerProcess.signal(SIGTERM)
            controllerProcess.signal(SIGTERM)
            #expect(brokerProcess.wait(seconds: 10) == 0)
            #expect(controllerProcess.wait(seconds: 10) == 0)
        }

        @Test("a worker started after exit was published exits on its own, through the controller or the broker")
        func lateWorkerExits() throws {
            let sandbox = try Sandbox("late")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let (_, publish, commands) = try sandbox.controller(broker: broker)
            let exit = try sandbox.run(["exit", "--controller", commands])
            #expect(exit.status == 0, "\(exit.stderr)")

            let viaBoth = try sandbox.start("late-1", ["worker", "--broker", broker, "--control", publish, "--echo"])
            let viaBroker = try sandbox.start("late-2", ["worker", "--broker", broker, "--echo"])
            #expect(viaBoth.wait(seconds: 20) == 0, "\(viaBoth.stderr)")
            #expect(viaBroker.wait(seconds: 20) == 0, "\(viaBroker.stderr)")
            #expect(viaBroker.stderr.contains("fleet exit"))
        }

        @Test("drover up runs a fleet that does real work and shuts down on drover exit",
              arguments: [["--exec", "tr a-z A-Z"], ["--serve", "stdbuf -oL tr a-z A-Z"]])
        func upSendExit(handler: [String]) throws {
            let sandbox = try Sandbox("up")
            defer { sandbox.tearDown() }
            let ready = sandbox.path("up.ready")
            let up = try sandbox.start("up", ["up", "--workers", "2", "--threads", "2"] + handler
                                           + ["--base-port", "0", "--ready-file", ready])
            let endpoints = try sandbox.waitForFile(ready, process: up)
            #expect(up.stdout.contains("eval \"$(drover up --print-env)\""), "it says how to get its keys: \(up.stdout)")
            let plain = try sandbox.run(["send", "--broker", endpoints[0], "x"])
            #expect(plain.status != 0 && plain.stderr.contains("requires keys"), "the fleet runs secured: \(plain.stderr)")
            let keys = try upEnvironment(sandbox)
            let sent = try sandbox.run(["send", "--broker", endpoints[0], "--wait", "hello", "world"], environment: keys)
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(Set(sent.lines) == ["HELLO", "WORLD"])
            let exit = try sandbox.run(["exit", "--controller", endpoints[2]], environment: keys)
            let upStatus = up.wait(seconds: 30)
            #expect(exit.status == 0, "\(exit.stdout)\(exit.stderr)\nthe fleet's log:\n\(up.stderr)")
            #expect(upStatus == 0, "\(up.stderr)")
            #expect(up.stdout.contains("drover fleet is down"))
        }

        @Test("when drover up is killed outright, its broker, controller and workers stop too")
        func upKilledTakesItsFleet() throws {
            let sandbox = try Sandbox("up-killed")
            defer { sandbox.tearDown() }
            let ready = sandbox.path("up.ready")
            let up = try sandbox.start("up", ["up", "--workers", "2", "--echo", "--base-port", "0", "--ready-file", ready])
            _ = try sandbox.waitForFile(ready, process: up)
            let children = childProcesses(of: up.pid)
            defer { for pid in children where isRunning(pid) { kill(pid, SIGKILL) } }  // also if this test fails
            #expect(children.count == 4, "broker, controller and 2 workers")
            up.signal(SIGKILL)
            // All get SIGTERM at once; a worker whose broker stopped first waits up to 30 s for
            // it to come back (to say goodbye) before it exits.
            #expect(sandbox.eventually(seconds: 45) { children.allSatisfy { !isRunning($0) } },
                    "still running: \(children.filter(isRunning))")
        }

        @Test("an item whose handler always fails is dead-lettered after exactly the cap, and replay runs it again")
        func deadLetterAndReplay() throws {
            let sandbox = try Sandbox("dlq")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker(["--max-deliveries", "3", "--retry-base-ms", "20"])
            let ledger = sandbox.path("attempts")
            _ = try sandbox.worker("w", broker: broker, ["--exec", "echo \"$DROVER_ATTEMPT\" >> \(ledger); echo bad input >&2; exit 3"])
            let sent = try sandbox.run(["send", "--broker", broker, "--wait", "x"])
            #expect(sent.status == 1)
            #expect(sent.stderr.contains("dead-lettered after 3 failed deliveries: command exited with status 3: bad input"))
            #expect(try String(contentsOfFile: ledger, encoding: .utf8) == "1\n2\n3\n", "exactly the cap, no more")

            let list = try sandbox.run(["dlq", "list", "--broker", broker])
            #expect(list.status == 0)
            #expect(list.stdout.contains("attempts=3  failures=3"))
            #expect(list.stdout.contains("last error: command exited with status 3: bad input"))
            let id = String(list.lines[0].prefix(32))
            let show = try sandbox.run(["dlq", "show", "--broker", broker, id])
            #expect(show.stdout.contains("payload:    x"))

            let replay = try sandbox.run(["dlq", "replay", "--broker", broker, id])
            #expect(replay.stdout.contains("replayed 1 dead item"))
            // It runs three more times (attempts 4 to 6) and is dead again.
            #expect(sandbox.eventually(seconds: 30) { ((try? String(contentsOfFile: ledger, encoding: .utf8)) ?? "") == "1\n2\n3\n4\n5\n6\n" })
            #expect(sandbox.eventually(seconds: 10) { (try? sandbox.run(["dlq", "list", "--broker", broker]).stdout.contains("attempts=6")) == true })
            let purge = try sandbox.run(["dlq", "purge", "--broker", broker])
            #expect(purge.stdout.contains("purged 1 dead item"))
            let bad = try sandbox.run(["dlq", "show", "--broker", broker, "not-an-id"])
            #expect(bad.status != 0 && bad.stderr.contains("is not an item id"))
        }

        @Test("Ctrl-C on drover up drains every worker and stops the fleet cleanly")
        func upInterrupted() throws {
            let sandbox = try Sandbox("up-sigint")
            defer { sandbox.tearDown() }
            let ready = sandbox.path("up.ready")
            let up = try sandbox.start("up", ["up", "--workers", "2", "--echo", "--base-port", "0", "--ready-file", ready])
            let endpoints = try sandbox.waitForFile(ready, process: up)
            let sent = try sandbox.run(["send", "--broker", endpoints[0], "--wait", "one", "two", "three"], environment: try upEnvironment(sandbox))
            #expect(sent.status == 0, "\(sent.stderr)")
            up.signal(SIGINT)
            #expect(up.wait(seconds: 30) == 0, "\(up.stderr)")
            #expect(up.stdout.contains("drover fleet is down"))
            #expect(up.stderr.components(separatedBy: "worker: worker exited").count - 1 == 2, "both workers drained")
        }

        @Test("past the drain deadline a running item is handed back, the worker exits 3, and the exit reports it")
        func drainDeadline() throws {
            let sandbox = try Sandbox("deadline")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let (_, publish, commands) = try sandbox.controller(broker: broker)
            let started = sandbox.path("started")
            let worker = try sandbox.worker("stuck", broker: broker, control: publish,
                                            ["--threads", "1", "--exec", "touch \(started); sleep 60"])
            let sent = try sandbox.run(["send", "--broker", broker, "long"])
            #expect(sent.status == 0)
            // Wait until the item is running, so the exit finds it mid-run.
            #expect(sandbox.eventually(seconds: 20) { FileManager.default.fileExists(atPath: started) })
            let exit = try sandbox.run(["exit", "--controller", commands, "--deadline", "1"], timeout: 60)
            #expect(exit.status == 1, "a worker had to give up a running item: \(exit.stderr)")
            #expect(exit.stdout.contains("worker stuck exited: 0 items completed, 1 handed back"))
            #expect(exit.stderr.contains("handed running items back when the deadline passed: stuck"))
            #expect(worker.wait(seconds: 20) == 3)
            let status = try sandbox.run(["status", "--broker", broker, "--json"])
            #expect(status.stdout.contains("\"queued\" : 1"), "the item is back in the queue: \(status.stdout)")
        }
    }
}

/// The fields of /proc/PID/stat after "pid (comm)": the state, then the parent's pid, ….
func procStat(_ pid: Int32) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ")
}

/// The pids whose parent is `parent`, from /proc.
func childProcesses(of parent: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let fields = procStat(pid), fields.count > 1 else { return false }
        return Int32(fields[1]) == parent
    }
}

/// Whether `pid` is a live process (a zombie waiting to be reaped is not).
func isRunning(_ pid: Int32) -> Bool {
    guard let state = procStat(pid)?.first else { return false }
    return state != "Z"
}

/// The environment `drover up --print-env` prints (`export NAME='VALUE' …`), as a dictionary:
/// the keys of the fleet `drover up` runs in `sandbox`.
func upEnvironment(_ sandbox: Sandbox) throws -> [String: String] {
    let printed = try sandbox.run(["up", "--print-env"])
    guard printed.status == 0 else { throw HarnessError("drover up --print-env failed: \(printed.stderr)") }
    var environment: [String: String] = [:]
    for word in printed.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").dropFirst() {
        let parts = word.split(separator: "=", maxSplits: 1)
        guard parts.count == 2 else { continue }
        environment[String(parts[0])] = String(parts[1]).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
    }
    return environment
}
