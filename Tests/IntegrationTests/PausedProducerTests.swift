import Foundation
import Testing

extension ProcessTests {
    /// A producer stopped for a while (Ctrl-Z and `fg`, a laptop lid, a paused VM) and continued.
    @Suite("A paused producer finishes")
    struct PausedProducerTests {
        /// With `--wait`, 200,000 results stream back; a pause past the broker's heartbeat timeout
        /// (3 s) loses the connection and whatever was queued on it. Before the fix the producer
        /// printed about 198,000 results and then spun at 100 % CPU for good, in one run of three.
        @Test("SIGSTOP of drover send for 2, 6 or 20 s, with and without --wait: every item accepted, every result printed once",
              arguments: [(2, true), (6, true), (20, true), (2, false), (6, false), (20, false)])
        func pausedProducer(seconds: Int, wait: Bool) throws {
            let sandbox = try Sandbox("pause-\(seconds)-\(wait)")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            let worker = try sandbox.worker("w", broker: broker, ["--echo", "--lookahead", "64"])
            let total = 200_000
            let producer = try sandbox.start("producer", ["send", "--broker", broker] + (wait ? ["--wait"] : []),
                                             stdin: (1...total).map(String.init).joined(separator: "\n") + "\n")
            // Pause it once items are flowing.
            #expect(sandbox.eventually(seconds: 30) { !worker.stdout.isEmpty })
            producer.signal(SIGSTOP)
            Thread.sleep(forTimeInterval: Double(seconds))  // the pause under test, not a wait for an event
            producer.signal(SIGCONT)
            let status = producer.wait(seconds: 120)
            #expect(status == 0, "stderr: \(producer.stderr.suffix(2000))")
            if status == nil { producer.kill() }
            #expect(producer.stderr.contains("\(total) items: \(total) accepted"), "\(producer.stderr.suffix(2000))")
            if wait {
                let results = producer.stdout.split(separator: "\n")
                #expect(results.count == total, "one result per item, printed once")
                #expect(Set(results.compactMap { Int($0) }) == Set(1...total))
            }
        }
    }
}
