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

    public init() {}
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
        return limits
    }
    /// Messages handled per poll wake-up before timers and the outbox get a turn.
    static let receiveBatch = 512
}
