import Drover
import Foundation

extension BenchReport {
    /// The `secure` scenario: the same fleet with keys (CURVE on every connection) and without.
    struct Secure: Codable {
        var itemBytes: Int
        var items: Int
        /// Items/s end to end, default worker flags, in-memory broker.
        var plaintext: Figure
        var secured: Figure
        /// Median secured ÷ median plaintext.
        var ratio: Double
        /// Milliseconds from a producer's connect to the broker's welcome, per connection.
        var connections: Int
        var handshakePlaintextMilliseconds: Figure
        var handshakeSecuredMilliseconds: Figure
    }

    func secureTable(_ n: (Double) -> String, _ f: (Figure) -> String) -> [String] {
        guard let s = secure else { return [] }
        return ["", "secure       \(s.items) items of \(s.itemBytes) B acknowledged end to end, default worker flags, same run:",
                "             plaintext \(f(s.plaintext)) items/s; with keys (CURVE) \(f(s.secured)) items/s: \(String(format: "%.2f", s.ratio)) of plaintext (target ≥ 0.8)",
                "             connect → welcome over \(s.connections) connections: plaintext \(f(s.handshakePlaintextMilliseconds)) ms, with keys \(f(s.handshakeSecuredMilliseconds)) ms"]
    }
}

extension Benchmark {
    /// Throughput with keys against without, run after run, and the handshake's cost.
    func secureScenario(items: Int, connections: Int) throws -> BenchReport.Secure {
        let keys = try LocalKeys(directory: "\(directory)/keys")
        var plain: [Double] = [], secured: [Double] = [], plainHandshake: [Double] = [], securedHandshake: [Double] = []
        for _ in 0..<settings.runs {
            for withKeys in [false, true] {
                let fleet = try BenchFleet(self, workers: Array(repeating: ["--bench-handler", "noop"], count: settings.workers),
                                           threads: settings.threads, lookahead: nil, keys: withKeys ? keys : nil)
                defer { fleet.stop() }
                let producer = try fleet.producer(wait: true)
                let payload = [UInt8](repeating: 0x61, count: 16)
                let rate = Double(items) / (try Self.secondsToComplete(producer, repeatElement(payload, count: items), count: items))
                producer.close()
                let handshake = try handshakeMilliseconds(fleet, connections: connections)
                if withKeys { secured.append(rate); securedHandshake.append(handshake) } else { plain.append(rate); plainHandshake.append(handshake) }
            }
        }
        let p = Figure(plain), s = Figure(secured)
        return .init(itemBytes: 16, items: items, plaintext: p, secured: s, ratio: s.median / p.median, connections: connections,
                     handshakePlaintextMilliseconds: Figure(plainHandshake), handshakeSecuredMilliseconds: Figure(securedHandshake))
    }

    /// Mean milliseconds for a new producer to connect and hear the broker's welcome.
    private func handshakeMilliseconds(_ fleet: BenchFleet, connections: Int) throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<connections {
            let producer = try fleet.producer(wait: false)
            producer.close()
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(connections)
    }
}
