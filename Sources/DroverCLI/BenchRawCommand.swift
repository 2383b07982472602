import ArgumentParser
import Drover
import Foundation
import ZeroMQ

/// The processes of `drover bench`'s baselines, plain libzmq with no acknowledgements and no
/// bookkeeping. Throughput: producer PUSH → forwarder PULL/PUSH → consumer PULL. Latency: the
/// shape of an item's trip (producer → broker → worker → broker → producer): client DEALER →
/// relay ROUTER/DEALER → echo REP and back. Hidden: only `drover bench` starts it.
struct BenchRawCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-raw", shouldDisplay: false)

    enum Role: String, ExpressibleByArgument {
        case forwarder, consumer, relay, echo
    }

    @Option var role: Role
    /// Forwarder, relay: where to write their two endpoints.
    @Option var readyFile: String?
    /// Consumer, echo: the forwarder's or relay's output endpoint.
    @Option var source: String?
    /// Consumer: where to report its running count.
    @Option var report: String?
    /// Consumer: its number in reports.
    @Option var index: UInt32 = 0

    func run() throws {
        let context = ZMQContext()
        let relay = SignalRelay { _, _ in context.shutdown() }
        defer { withExtendedLifetime(relay) {} }
        do {
            switch role {
            case .forwarder:
                let input = try ZMQSocket(context, type: .pull, linger: 0)
                let output = try ZMQSocket(context, type: .push, linger: 0)
                try input.bind("tcp://127.0.0.1:*")
                try output.bind("tcp://127.0.0.1:*")
                try writeReadyFile(readyFile!, lines: [try input.lastEndpoint(), try output.lastEndpoint()])
                try zmqProxy(frontend: input, backend: output)
            case .relay:
                let front = try ZMQSocket(context, type: .router, linger: 0)
                let back = try ZMQSocket(context, type: .dealer, linger: 0)
                // No high-water mark: a ROUTER drops what meets a full pipe, and the baseline
                // must return every message it is given.
                for socket in [front, back] {
                    try socket.set(.sendHighWaterMark(0))
                    try socket.set(.receiveHighWaterMark(0))
                }
                try front.bind("tcp://127.0.0.1:*")
                try back.bind("tcp://127.0.0.1:*")
                try writeReadyFile(readyFile!, lines: [try front.lastEndpoint(), try back.lastEndpoint()])
                try zmqProxy(frontend: front, backend: back)
            case .echo:
                let socket = try ZMQSocket(context, type: .rep, linger: 0)
                try socket.set(.sendHighWaterMark(0))
                try socket.set(.receiveHighWaterMark(0))
                try socket.connect(source!)
                while let frames = try socket.receive() { try socket.send(frames) }
            case .consumer:
                let input = try ZMQSocket(context, type: .pull, linger: 0)
                let reports = try ZMQSocket(context, type: .push, linger: 0)
                try input.connect(source!)
                try reports.connect(report!)
                var count: UInt64 = 0
                while true {
                    _ = try input.receiveDiscarding()
                    count += 1
                    while try input.receiveDiscarding(dontWait: true) != nil { count += 1 }
                    var frame = withUnsafeBytes(of: index.bigEndian, Array.init)
                    frame += withUnsafeBytes(of: count.bigEndian, Array.init)
                    try reports.send([frame])
                }
            }
        } catch let error as ZMQError where error == .contextTerminated {
            return
        }
    }
}
