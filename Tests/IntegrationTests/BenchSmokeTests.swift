import Foundation
import Testing

extension ProcessTests {
    /// `drover bench` is measured by people, not asserted on: this only checks that every
    /// scenario runs and that its figures are consistent, never how fast anything is.
    @Suite("drover bench smoke run")
    struct BenchSmokeTests {
        @Test("drover bench --quick runs every scenario; every item is accounted for and every figure is positive")
        func quickRun() throws {
            let sandbox = try Sandbox("bench")
            defer { sandbox.tearDown() }
            let run = try sandbox.run(["bench", "--quick", "--json"], timeout: 300)
            #expect(run.status == 0, "\(run.stderr.suffix(2000))")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])

            let throughput = try #require(report["throughput"] as? [[String: Any]])
            #expect(throughput.map { $0["itemBytes"] as? Int } == [16, 256, 4096])
            for row in throughput {
                let drover = try #require(row["drover"] as? [String: Double])
                let raw = try #require(row["raw"] as? [String: Double])
                let (low, median, high) = (try #require(drover["min"]), try #require(drover["median"]), try #require(drover["max"]))
                let rawMedian = try #require(raw["median"])
                #expect(low > 0 && low <= median && median <= high)
                #expect(rawMedian > 0)
                #expect(abs(try #require(row["ratio"] as? Double) - median / rawMedian) < 1e-9)
            }
            let latency = try #require(report["latency"] as? [[String: Any]])
            #expect(latency.count == 2)
            for row in latency {
                let p50 = try #require(row["p50"] as? [String: Double]), p99 = try #require(row["p99"] as? [String: Double])
                let (p50Median, p99Median) = (try #require(p50["median"]), try #require(p99["median"]))
                #expect(p50Median > 0 && p50Median <= p99Median)
                let rawP50 = try #require(row["rawP50"] as? [String: Double]), rawP99 = try #require(row["rawP99"] as? [String: Double])
                let (rawP50Median, rawP99Median) = (try #require(rawP50["median"]), try #require(rawP99["median"]))
                #expect(rawP50Median > 0 && rawP50Median <= rawP99Median)
            }
            let scaling = try #require(report["scaling"] as? [String: Any])
            #expect(scaling["handlerThreads"] as? Int == 32)
            #expect((scaling["efficiencyPercent"] as? Double ?? 0) > 0)
            let memory = try #require(report["memory"] as? [String: Any])
            #expect(((memory["bytesPerItem"] as? [String: Double])?["median"] ?? 0) > 0)
            let handlers = try #require(report["handlers"] as? [String: Any])
            for key in ["serve", "exec", "seedPatternFed", "seedPatternLocal"] {
                #expect(((handlers[key] as? [String: Double])?["median"] ?? 0) > 0, "\(key)")
            }
            #expect((handlers["serveOverExec"] as? Double ?? 0) > 1, "a kept process beats a process per item")
            let lookahead = try #require(report["lookahead"] as? [String: Any])
            #expect((lookahead["fixed"] as? [[String: Any]])?.compactMap { $0["lookahead"] as? Int } == [1, 64, 4096])
            let share = try #require((lookahead["fastWorkerShare"] as? [String: Double])?["median"])
            #expect(share > 0.5, "beside a 0.5 s worker, the fast one runs most items with default flags")
            #expect(((lookahead["mixedSecondsAuto"] as? [String: Double])?["median"] ?? 0) > 0)
            let durable = try #require(report["durable"] as? [String: Any])
            for key in ["inMemory", "journaled", "itemsPerSync", "journalBytesPerItem", "rawGroupCommit", "recoverySeconds",
                        "backlogMaxResident", "backlogDrainPerSecond"] {
                #expect(((durable[key] as? [String: Double])?["median"] ?? 0) > 0, "durable \(key)")
            }
            #expect((durable["acceptLatency"] as? [[String: Any]])?.compactMap { $0["offeredPerSecond"] as? Int } == [1000, 10000])
            let inMemory = try #require((durable["inMemory"] as? [String: Double])?["median"])
            let journaled = try #require((durable["journaled"] as? [String: Double])?["median"])
            #expect(abs(try #require(durable["ratio"] as? Double) - journaled / inMemory) < 1e-9)
            let secure = try #require(report["secure"] as? [String: Any])
            for key in ["plaintext", "secured", "handshakePlaintextMilliseconds", "handshakeSecuredMilliseconds"] {
                #expect(((secure[key] as? [String: Double])?["median"] ?? 0) > 0, "secure \(key)")
            }
            let plaintext = try #require((secure["plaintext"] as? [String: Double])?["median"])
            let secured = try #require((secure["secured"] as? [String: Double])?["median"])
            #expect(abs(try #require(secure["ratio"] as? Double) - secured / plaintext) < 1e-9)
        }

        @Test("--no-raw measures Drover alone: its figures are there, the raw ones and the ratio are not")
        func withoutRaw() throws {
            let sandbox = try Sandbox("bench-noraw")
            defer { sandbox.tearDown() }
            let run = try sandbox.run(["bench", "--quick", "--no-raw", "--scenarios", "throughput", "--sizes", "16"], timeout: 120)
            #expect(run.status == 0, "\(run.stderr.suffix(2000))")
            let row = try #require(run.stdout.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("16 ") })
            let columns = row.split(separator: " ")
            #expect((Double(columns[2]) ?? 0) > 0, "\(row)")
            #expect(columns.suffix(2) == ["-", "-"], "\(row)")
        }

        @Test("an unknown scenario is refused by name")
        func unknownScenario() throws {
            let sandbox = try Sandbox("bench-bad")
            defer { sandbox.tearDown() }
            let run = try sandbox.run(["bench", "--scenarios", "speed"])
            #expect(run.status != 0)
            #expect(run.stderr.contains("unknown scenario \"speed\""))
        }
    }
}
