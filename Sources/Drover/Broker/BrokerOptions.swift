import Foundation
import DroverDispatch

/// How a ``Broker`` runs. Every property has a default that suits one broker per fleet.
public struct BrokerOptions: Sendable {
    /// The one endpoint for producers, workers and the controller. Default `tcp://*:5555`.
    public var bind = "tcp://*:5555"
    /// Largest item accepted, in bytes. Default 1 MiB: larger payloads belong in a blob store,
    /// with the item carrying a reference.
    public var maxItemBytes = 1 << 20
    /// Most items held at once, queued or leased. Default 1,000,000; past it producers are told
    /// "queue full" and retry, so the broker's memory stays bounded.
    public var maxItems = 1_000_000
    /// How often the broker heartbeats workers, in milliseconds. Default 1000.
    public var heartbeatMilliseconds: Int32 = 1000
    /// How many heartbeat intervals of silence declare a worker dead. Default 3, so a dead
    /// worker's items are redelivered about 3 s after its last sign of life.
    public var liveness: Int32 = 3
    /// A file to write the bound endpoint to once the broker is listening (for scripts and tests).
    public var readyFile: String? = nil
    /// Failed deliveries before an item is dead-lettered. Default 5.
    public var maxDeliveries = 5
    /// Per-queue overrides of ``maxDeliveries``.
    public var queueMaxDeliveries: [String: Int] = [:]
    /// Backoff before the first retry, doubling (with jitter) for each further one. Default 500 ms.
    public var retryBaseMilliseconds: Int64 = 500
    /// Longest retry backoff. Default 60 s.
    public var retryMaxMilliseconds: Int64 = 60_000
    /// Where the journal lives: every accepted item is on disk there before its producer hears
    /// "accepted", and a restart picks up what was held. `nil`: in memory only (faster, and a
    /// stop or crash loses everything held).
    public var dataDirectory: String? = nil
    /// Size of each journal segment file. Default 64 MiB; at least 4 × the largest item.
    public var segmentBytes = 64 << 20
    /// Payload bytes of queued items kept in memory: with a journal, past it payloads are
    /// read back from disk when dispatched; without, producers are told "queue full".
    /// Default 1 GiB, or a quarter of the machine's memory if that is less.
    public var memoryLimitBytes = BrokerOptions.defaultMemoryLimit
    /// Most payload bytes held in all (memory or disk); 0 for no limit but the disk.
    public var maxHeldBytes = 0
    /// Who may connect, and what each key may do. Default: no keys, loopback peers only.
    public var security = ServerSecurity.loopbackOnly

    public init() {}
}

extension BrokerOptions {
    /// Where a broker keeps its journal when no `--data-dir` is given: systemd's
    /// `$STATE_DIRECTORY` (a unit with `StateDirectory=`), else `$XDG_STATE_HOME/drover/NAME`,
    /// else `~/.local/state/drover/NAME`. `drover broker` uses NAME `broker`, `drover up` `up`.
    public static func defaultDataDirectory(name: String = "broker", environment: [String: String]) -> String {
        if let state = environment["STATE_DIRECTORY"], !state.isEmpty {
            // systemd may list several, separated by colons; the first is ours.
            return String(state.split(separator: ":").first ?? Substring(state))
        }
        if let xdg = environment["XDG_STATE_HOME"], xdg.hasPrefix("/") { return "\(xdg)/drover/\(name)" }
        if let home = environment["HOME"], home.hasPrefix("/"), home != "/" { return "\(home)/.local/state/drover/\(name)" }
        return "./drover-data/\(name)"
    }

    /// 1 GiB, or a quarter of this machine's memory if that is less.
    public static let defaultMemoryLimit: Int = {
        let physical = Int(ProcessInfo.processInfo.physicalMemory)
        return physical > 0 ? min(1 << 30, physical / 4) : 1 << 30
    }()

    /// The smallest journal segment for items of `maxItemBytes`: four of the largest fit.
    public static func minimumSegmentBytes(maxItemBytes: Int) -> Int {
        max(1 << 20, 4 * (maxItemBytes + 4096) + 4096)
    }
}

/// Limits that follow from the options.
extension BrokerOptions {
    /// ZMQ_MAXMSGSIZE applies per frame: an item travels in a frame of its own, so the largest
    /// legal frame is one item; the slack covers a frame of ids in a large `accepted` batch.
    var maxFrameBytes: Int64 { Int64(max(maxItemBytes, 1 << 20)) + 64 * 1024 }
    /// Outbound queue per peer, in messages. Credit bounds deliveries; this bounds the rest.
    static let sendHighWaterMark: Int32 = 100_000
    /// The dispatcher's limits and policies.
    var dispatcherLimits: DispatcherLimits {
        var limits = DispatcherLimits(maxItemBytes: maxItemBytes, maxItems: maxItems,
                                      workerLivenessMilliseconds: Int64(heartbeatMilliseconds) * Int64(liveness))
        limits.maxDeliveries = maxDeliveries
        limits.queueMaxDeliveries = queueMaxDeliveries
        limits.retryBaseMilliseconds = retryBaseMilliseconds
        limits.retryMaxMilliseconds = retryMaxMilliseconds
        limits.memoryLimitBytes = memoryLimitBytes
        limits.maxHeldBytes = maxHeldBytes
        return limits
    }
    /// Inbound queue per peer, in messages: what a producer can push ahead of the broker
    /// (a `submit` carries up to 256 KiB), which the broker's memory would otherwise hold however
    /// low `--memory-limit` is. Past it, the producer's own socket holds its sends back.
    static let receiveHighWaterMark: Int32 = 1000
    /// Messages handled per poll wake-up before timers and the outbox get a turn.
    static let receiveBatch = 512
}
