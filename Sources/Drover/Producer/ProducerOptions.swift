/// How a ``Producer`` sends. Every property has a documented default.
public struct ProducerOptions: Sendable {
    /// The broker, for example `tcp://broker-host:5555`.
    public var broker: String
    /// The queue items go to. Default `default`.
    public var queue = "default"
    /// Wait for each item's outcome (`drover send --wait`). Default `false`: return once the
    /// broker has accepted every item.
    public var waitForResults = false
    /// How long each item may run once a worker starts it, in milliseconds; 0 (the default) for
    /// no limit. A worker's own `--item-timeout` applies too: the smaller wins.
    public var itemTimeoutMilliseconds: UInt32 = 0
    /// How long to wait for the broker's first answer. Default 5 s.
    public var connectTimeoutSeconds = 5.0
    /// How long to keep reconnecting to a broker that went silent before giving up. Default 60 s.
    public var reconnectTimeoutSeconds = 60.0
    /// Most items per `submit` message. Default 256: large enough to amortise per-message cost,
    /// small enough that the first items are accepted (and start running) at once.
    public var batchItems = 256
    /// Most payload bytes per `submit` message. Default 256 KiB.
    public var batchBytes = 256 * 1024
    /// Most items unfinished at once: not yet accepted, or with ``waitForResults`` not yet
    /// completed. Default 10,000: bounds the producer's memory (it keeps each payload until the
    /// item is safe, to offer it again after a broker restart) and keeps it from flooding a
    /// broker that is slow to accept.
    public var window = 10_000
    /// Keys for a broker that uses them (`--key`, `--broker-key`); nil for plaintext.
    public var security: ClientSecurity? = nil

    public init(broker: String) {
        self.broker = broker
    }
}

/// What happened to a run of items, by the producer's count.
public struct ProducerSummary: Sendable, Equatable {
    /// Items taken from the input.
    public var read = 0
    /// Items sent to the broker (all but those refused before sending).
    public var sent = 0
    public var accepted = 0
    public var succeeded = 0
    public var failed = 0
    /// Items refused (by the broker or, for oversize items, before sending): index and reason.
    public var rejected: [Int: String] = [:]
}

/// Progress, reported while a run goes on.
public struct ProducerProgress: Sendable {
    public var read: Int
    public var accepted: Int
    public var finished: Int
}
