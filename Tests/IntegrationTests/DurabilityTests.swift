import Foundation
import Testing

/// A `--serve` handler in Python that records every execution in a ledger (as ``Ledger``
/// reads it) and answers with the item: fast enough for tens of thousands of items.
func recordingServeHandler(_ sandbox: Sandbox, ledger: Ledger) throws -> String {
    let script = sandbox.path("record.py")
    try """
    import os, sys
    worker = os.environ.get("DROVER_WORKER", "worker")
    ledger = open(sys.argv[1], "a", buffering=1)
    for line in sys.stdin:
        item = line.rstrip("\\n")
        ledger.write(f"{item} 0 {worker}\\n")
        sys.stdout.write(item + "\\n")
        sys.stdout.flush()
    """.write(toFile: script, atomically: true, encoding: .utf8)
    return "python3 \(script) \(ledger.path)"
}

/// Broker status as JSON, through `drover status --json`.
func brokerStatus(_ sandbox: Sandbox, _ broker: String) throws -> [String: Any] {
    let status = try sandbox.run(["status", "--broker", broker, "--json"])
    return (try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]) ?? [:]
}

/// The counts of one queue in broker status.
func queueCounts(_ status: [String: Any], _ name: String) -> [String: Int] {
    let queues = status["queues"] as? [[String: Any]] ?? []
    let queue = queues.first { $0["name"] as? String == name } ?? [:]
    return queue.compactMapValues { $0 as? Int }
}

extension ProcessTests {
    @Suite("The journal: a broker restart loses nothing")
    struct DurabilityTests {
        @Test("kill -9 of the broker every 2 s during send (without --wait) of 50,000 items to 3 workers: every accepted item runs, duplicates bounded")
        func killBrokerRepeatedly() throws {
            try faultBrokerRepeatedly(name: "kill-broker", total: 50_000) { broker, sandbox, endpoint, dataDirectory in
                broker.signal(SIGKILL)
                _ = broker.wait(seconds: 10)
                return try sandbox.broker(["--bind", endpoint, "--data-dir", dataDirectory, "--max-deliveries", "100"]).process
            }
        }

        // The pause outlasts the workers' ZMTP heartbeat timeout, so their connections drop and
        // take messages in flight both ways (deliveries, outcomes): their next hello names what
        // they hold and the broker takes back the rest (`Hello.held`). Before that, 2 of 11 runs
        // ended with leases stuck on workers that never got them.
        @Test("SIGSTOP of the broker for 4 s, three times, during send of 20,000 items: every accepted item runs, duplicates bounded")
        func pauseBrokerRepeatedly() throws {
            var pauses = 0
            try faultBrokerRepeatedly(name: "stop-broker", total: 20_000, maxFaults: 3) { broker, sandbox, _, _ in
                broker.signal(SIGSTOP)
                // The pause is the fault: the fleet meets a broker that does not answer.
                _ = broker.wait(seconds: 4)
                broker.signal(SIGCONT)
                pauses += 1
                return broker
            }
            #expect(pauses == 3)
        }

        /// Sends `total` items without waiting, to 3 recording workers, and applies `fault` to
        /// the broker every 2 s (at most `maxFaults` times) until the send has finished and
        /// every item has run at least once.
        private func faultBrokerRepeatedly(name: String, total: Int, maxFaults: Int = 12,
                                           _ fault: (DroverProcess, Sandbox, String, String) throws -> DroverProcess) throws {
            let sandbox = try Sandbox(name)
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            var (broker, endpoint) = try sandbox.broker(["--data-dir", dataDirectory, "--max-deliveries", "100"])
            let ledger = Ledger(path: sandbox.path("ledger"))
            let handler = try recordingServeHandler(sandbox, ledger: ledger)
            let threads = 2, lookahead = 1
            for worker in ["w1", "w2", "w3"] {
                _ = try sandbox.worker(worker, broker: endpoint, ["--threads", "\(threads)", "--lookahead", "\(lookahead)", "--serve", handler])
            }
            let producer = try sandbox.start("producer", ["send", "--broker", endpoint],
                                             stdin: (1...total).map(String.init).joined(separator: "\n"))
            // The first fault as soon as items run, so that it falls during the send.
            #expect(sandbox.eventually(seconds: 30) { !ledger.entries.isEmpty })
            var faults = 0
            let deadline = Date().addingTimeInterval(240)
            while Date() < deadline {
                if faults < maxFaults && (producer.exitStatus == nil || faults < 3) {
                    broker = try fault(broker, sandbox, endpoint, dataDirectory)
                    faults += 1
                }
                if producer.exitStatus != nil && Set(ledger.entries.map(\.item)).count >= total { break }
                _ = producer.wait(seconds: 2)
            }
            #expect(producer.wait(seconds: 60) == 0, "\(producer.stderr.suffix(2000))")
            #expect(producer.stderr.contains("\(total) accepted"), "every item accepted: \(producer.stderr.suffix(500))")
            #expect(sandbox.eventually(seconds: 120) { Set(ledger.entries.map(\.item)).count >= total },
                    "ran \(Set(ledger.entries.map(\.item)).count) of \(total)")
            let executions = ledger.entries
            let ran = Set(executions.map(\.item))
            let lost = Set(1...total).subtracting(ran)
            let unexpected = ran.subtracting(1...total)
            let duplicates = executions.count - ran.count
            let bound = faults * 3 * (threads + lookahead)
            let counters = (try? brokerCounters(sandbox, endpoint)) ?? [:]
            #expect(lost.isEmpty, "lost \(lost.count) accepted items, e.g. \(lost.sorted().prefix(5)); broker: \(broker.stderr.suffix(2000)); producer: \(producer.stderr.suffix(3000)); counters: \(counters)")
            #expect(unexpected.isEmpty)
            #expect(duplicates <= bound, "\(duplicates) duplicated executions for \(faults) faults (bound \(bound))")
            #expect(sandbox.eventually(seconds: 30) { (try? brokerStatus(sandbox, endpoint))?["itemsHeld"] as? Int == 0 },
                    "the broker ends holding nothing: \((try? sandbox.run(["status", "--broker", endpoint, "--json"]).stdout) ?? "")")
            print("\(name): \(faults) faults, \(total) items, \(duplicates) duplicated executions (bound \(bound))")
        }

        @Test("queued items, dead letters and completions survive kill -9; nothing completed runs again")
        func restartKeepsEverything() throws {
            let sandbox = try Sandbox("restart-keeps")
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            var (broker, endpoint) = try sandbox.broker(["--data-dir", dataDirectory, "--max-deliveries", "1"])
            // A dead letter: one delivery that fails.
            let failing = try sandbox.worker("failing", broker: endpoint, ["--queue", "bad", "--exec", "echo boom >&2; exit 3"])
            #expect(try sandbox.run(["send", "--broker", endpoint, "--queue", "bad", "--wait", "doomed"]).status != 0)
            failing.signal(SIGTERM)
            _ = failing.wait(seconds: 10)
            // Queued items, with no worker for them yet.
            #expect(try sandbox.run(["send", "--broker", endpoint, "--queue", "work", "1", "2", "3"]).status == 0)
            // Completed items.
            let ledger = Ledger(path: sandbox.path("ledger"))
            let done = try sandbox.worker("done", broker: endpoint, ["--queue", "done", "--exec", ledger.handler()])
            #expect(try sandbox.run(["send", "--broker", endpoint, "--queue", "done", "--wait", "7", "8"]).status == 0)
            done.signal(SIGTERM)
            _ = done.wait(seconds: 10)

            broker.signal(SIGKILL)
            _ = broker.wait(seconds: 10)
            broker = try sandbox.broker(["--bind", endpoint, "--data-dir", dataDirectory, "--max-deliveries", "1"]).process
            #expect(broker.stderr.contains("journal recovered"))
            let status = try brokerStatus(sandbox, endpoint)
            #expect(status["itemsHeld"] as? Int == 4, "3 queued and 1 dead: \(status)")
            #expect(queueCounts(status, "work")["queued"] == 3)
            #expect(queueCounts(status, "bad")["dead"] == 1)
            #expect(queueCounts(status, "done")["queued"] ?? 0 == 0, "completed items are not queued again")
            let dlq = try sandbox.run(["dlq", "list", "--broker", endpoint])
            #expect(dlq.stdout.contains("boom") || dlq.stdout.contains("exit status 3"), "the dead letter keeps its error: \(dlq.stdout)")
            let journal = try #require(status["journal"] as? [String: Any])
            #expect(journal["recoveredItems"] as? Int == 4)

            _ = try sandbox.worker("work", broker: endpoint, ["--queue", "work", "--exec", ledger.handler()])
            #expect(sandbox.eventually(seconds: 20) { ledger.entries.count >= 5 })
            let drained = sandbox.eventually(seconds: 20) { queueCounts((try? brokerStatus(sandbox, endpoint)) ?? [:], "work")["queued"] == 0
                && (try? brokerStatus(sandbox, endpoint))?["itemsHeld"] as? Int == 1 }
            #expect(drained, "the recovered items ran; only the dead letter is left")
            // The worker's ledger: 7 and 8 before the restart, the three queued ones after, once each.
            #expect(ledger.entries.map(\.item).sorted() == [1, 2, 3, 7, 8], "\(ledger.entries)")
        }

        @Test("a second broker on the same data directory refuses to start, naming the first")
        func secondBrokerRefused() throws {
            let sandbox = try Sandbox("lock")
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            let (first, _) = try sandbox.broker(["--data-dir", dataDirectory])
            let second = try sandbox.run(["broker", "--bind", "tcp://127.0.0.1:*", "--data-dir", dataDirectory], timeout: 20)
            #expect(second.status != 0)
            #expect(second.stderr.contains("another broker (pid \(first.pid)) is using this data directory"), "\(second.stderr)")
            #expect(first.exitStatus == nil, "the first broker runs on")
        }

        @Test("damage in the middle of the journal: verify exits 1 naming the offset, the broker refuses to start and changes nothing")
        func damagedJournal() throws {
            let sandbox = try Sandbox("damage")
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            let (broker, endpoint) = try sandbox.broker(["--data-dir", dataDirectory])
            for batch in 0..<3 {
                #expect(try sandbox.run(["send", "--broker", endpoint, "item-\(batch)-a", "item-\(batch)-b"]).status == 0)
            }
            broker.signal(SIGTERM)
            #expect(broker.wait(seconds: 10) == 0)
            let segment = "\(dataDirectory)/segment-0000000001.journal"
            let sound = try sandbox.run(["journal", "verify", dataDirectory])
            #expect(sound.status == 0, "\(sound.stdout)")
            #expect(sound.stdout.contains("3 records") && sound.stdout.contains("6 queued"), "\(sound.stdout)")

            // Flip one bit in the first record's payload (the first of three).
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment)))
            let at = try #require(bytes.firstIndex(of: UInt8(ascii: "i")))
            bytes[at] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: segment))

            let verify = try sandbox.run(["journal", "verify", dataDirectory])
            #expect(verify.status == 1)
            #expect(verify.stdout.contains("DAMAGED at offset 32"), "\(verify.stdout)")
            let refused = try sandbox.run(["broker", "--bind", "tcp://127.0.0.1:*", "--data-dir", dataDirectory], timeout: 20)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("segment-0000000001.journal at offset 32"), "\(refused.stderr)")
            #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment))) == bytes, "nothing was cut")
        }

        @Test("a torn last write is cut at start and counted; the records before it are all recovered")
        func tornTail() throws {
            let sandbox = try Sandbox("torn")
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            let (broker, endpoint) = try sandbox.broker(["--data-dir", dataDirectory])
            #expect(try sandbox.run(["send", "--broker", endpoint, "a", "b", "c"]).status == 0)
            broker.signal(SIGTERM)
            #expect(broker.wait(seconds: 10) == 0)
            // The start of a record that a crash cut short: a length, a checksum, a few bytes.
            let segment = "\(dataDirectory)/segment-0000000001.journal"
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment)))
            let end = try #require(bytes.lastIndex { $0 != 0 }) + 1
            bytes.replaceSubrange(end..<end + 11, with: [40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 7, 7])
            try Data(bytes).write(to: URL(fileURLWithPath: segment))

            let (restarted, again) = try sandbox.broker(["--data-dir", dataDirectory])
            #expect(restarted.stderr.contains("cut a torn tail off the journal"), "\(restarted.stderr)")
            #expect(restarted.stderr.contains("bytes=11"))
            #expect(try brokerStatus(sandbox, again)["itemsHeld"] as? Int == 3)
        }

        @Test("a full disk (a 5 MiB tmpfs): new items are refused with a clear reason, held ones complete, accepting resumes, nothing is lost")
        func diskFull() throws {
            let sandbox = try Sandbox("disk-full")
            defer { sandbox.tearDown() }
            let disk = sandbox.path("disk")
            try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
            let mount = Process()
            mount.executableURL = URL(fileURLWithPath: "/bin/mount")
            mount.arguments = ["-t", "tmpfs", "-o", "size=5m", "tmpfs", disk]
            try mount.run()
            mount.waitUntilExit()
            try #require(mount.terminationStatus == 0, "this test mounts a small tmpfs and needs root")
            defer {
                let umount = Process()
                umount.executableURL = URL(fileURLWithPath: "/bin/umount")
                umount.arguments = ["-l", disk]
                try? umount.run()
                umount.waitUntilExit()
            }
            let (broker, endpoint) = try sandbox.broker(["--data-dir", "\(disk)/data", "--segment-size", "1048576", "--max-item-size", "65536"])
            let total = 6000
            let items = (0..<total).map { String($0).padding(toLength: 1000, withPad: "x", startingAt: 0) }.joined(separator: "\n")
            let producer = try sandbox.start("producer", ["send", "--broker", endpoint], stdin: items)
            #expect(sandbox.eventually(seconds: 30) { broker.stderr.contains("the journal's disk is full: refusing new items") },
                    "\(broker.stderr.suffix(1000))")
            let full = try sandbox.run(["status", "--broker", endpoint])
            #expect(full.stdout.contains("DISK FULL"), "\(full.stdout)")
            #expect(producer.exitStatus == nil, "the producer waits and retries: \(producer.stderr.suffix(500))")
            #expect(broker.exitStatus == nil, "the broker runs on")
            // A worker completes what is held; completed segments go, and accepting resumes.
            _ = try sandbox.worker("w", broker: endpoint, ["--echo", "--threads", "2"])
            #expect(producer.wait(seconds: 120) == 0, "\(producer.stderr.suffix(1000))")
            #expect(producer.stderr.contains("\(total) accepted"))
            #expect(broker.stderr.contains("the journal's disk has room again; accepting items"))
            #expect(sandbox.eventually(seconds: 60) { (try? brokerCounters(sandbox, endpoint))?["completed"] == total },
                    "every accepted item completed: \((try? brokerCounters(sandbox, endpoint)) ?? [:])")
            #expect(try brokerCounters(sandbox, endpoint)["accepted"] == total)
            broker.signal(SIGTERM)
            #expect(broker.wait(seconds: 10) == 0)
        }

        @Test("a backlog 60 times the memory limit: memory does not follow the backlog; after kill -9 and recovery every payload comes back intact")
        func backlogLargerThanMemory() throws {
            let sandbox = try Sandbox("backlog")
            defer { sandbox.tearDown() }
            let dataDirectory = sandbox.path("data")
            let limit = ["--data-dir", dataDirectory, "--memory-limit", "4MiB"]
            var (broker, endpoint) = try sandbox.broker(limit)
            func residentBytes() -> Int {
                let status = (try? String(contentsOfFile: "/proc/\(broker.pid)/status", encoding: .utf8)) ?? ""
                let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
                return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
            }
            // Each round: 15,000 items of 3,000 bytes (45 MB), no worker.
            let perRound = 15_000, rounds = 6, size = 3000
            func round(_ r: Int) throws {
                let items = (0..<perRound).map { String(r * perRound + $0).padding(toLength: size, withPad: "x", startingAt: 0) }
                #expect(try sandbox.run(["send", "--broker", endpoint], stdin: items.joined(separator: "\n")).status == 0)
            }
            try round(0)
            let afterFirst = residentBytes()
            for r in 1..<rounds { try round(r) }
            let afterAll = residentBytes()
            let payload = (rounds - 1) * perRound * size
            // Held in memory, the payloads alone would grow RSS by `payload`. What a held item
            // costs in books (about 200 bytes, its arrays growing by doubling) grows with the
            // backlog, and so may the heap's high-water mark of frames in flight; the payloads do not.
            #expect(afterAll - afterFirst < payload * 2 / 3, "RSS grew \(afterAll - afterFirst) bytes for \(payload) bytes of payloads")
            print("backlog: RSS grew \(afterAll - afterFirst) bytes while \(payload) bytes of payloads arrived")
            let status = try brokerStatus(sandbox, endpoint)
            #expect(status["bytesHeld"] as? Int == rounds * perRound * size)
            #expect((status["bytesInMemory"] as? Int ?? .max) <= 4 << 20)

            broker.signal(SIGKILL)
            _ = broker.wait(seconds: 10)
            broker = try sandbox.broker(["--bind", endpoint] + limit).process
            let recovered = try brokerStatus(sandbox, endpoint)
            #expect(recovered["itemsHeld"] as? Int == rounds * perRound)
            #expect((recovered["bytesInMemory"] as? Int ?? .max) <= 4 << 20, "recovery keeps payloads past the limit on disk")
            #expect(residentBytes() < rounds * perRound * size, "RSS after recovery \(residentBytes()) is below the payloads held")

            // Every payload read back from the journal, intact, each item once.
            let worker = try sandbox.worker("echo", broker: endpoint, ["--echo", "--threads", "2"])
            #expect(sandbox.eventually(seconds: 180) { (try? brokerStatus(sandbox, endpoint))?["itemsHeld"] as? Int == 0 })
            worker.signal(SIGTERM)
            #expect(worker.wait(seconds: 20) == 0)
            let lines = worker.stdout.split(separator: "\n")
            #expect(lines.count == rounds * perRound)
            let numbers = Set(lines.compactMap { line -> Int? in
                line.count == size ? Int(line.prefix { $0 != "x" }) : nil
            })
            #expect(numbers == Set(0..<rounds * perRound), "\(numbers.count) distinct intact payloads")
        }

        @Test("--in-memory keeps no journal and says so; --in-memory with --data-dir is refused")
        func inMemory() throws {
            let sandbox = try Sandbox("in-memory")
            defer { sandbox.tearDown() }
            let (broker, endpoint) = try sandbox.broker(["--in-memory"])
            #expect(broker.stderr.contains("in memory only"))
            #expect(try sandbox.run(["send", "--broker", endpoint, "x"]).status == 0)
            #expect(try brokerStatus(sandbox, endpoint)["journal"] == nil)
            #expect(!FileManager.default.fileExists(atPath: sandbox.path(".local/state/drover/broker")))
            let both = try sandbox.run(["broker", "--in-memory", "--data-dir", sandbox.path("d")])
            #expect(both.status != 0 && both.stderr.contains("contradict"))
        }

        @Test("by default the broker journals in ~/.local/state/drover/broker, made if missing")
        func defaultDataDirectory() throws {
            let sandbox = try Sandbox("default-dir")
            defer { sandbox.tearDown() }
            let (_, endpoint) = try sandbox.broker()
            #expect(try sandbox.run(["send", "--broker", endpoint, "x"]).status == 0)
            let journal = try #require(try brokerStatus(sandbox, endpoint)["journal"] as? [String: Any])
            #expect(journal["directory"] as? String == sandbox.path(".local/state/drover/broker"))
            #expect(FileManager.default.fileExists(atPath: sandbox.path(".local/state/drover/broker/segment-0000000001.journal")))
        }
    }
}
