import DroverProtocol
#if canImport(Glibc)
import Glibc
#endif

/// How a ``Worker`` runs. Every property has a documented default.
public struct WorkerOptions: Sendable {
    /// The broker to take items from, for example `tcp://broker-host:5555`.
    public var broker: String
    /// Keys for a broker that uses them (`--key`, `--broker-key`); nil for plaintext.
    public var security: ClientSecurity? = nil
    /// Keys for the controller's publisher (`--key`, `--controller-key`); nil for plaintext.
    public var controlSecurity: ClientSecurity? = nil
    /// The controller's publish endpoint (`tcp://HOST:5556`), or `nil` to learn fleet state from
    /// the broker alone. Either path is enough; both make exit reach a worker sooner.
    public var control: String? = nil
    /// The queue to serve. Default `default`.
    public var queue = "default"
    /// Handler threads. Default 2, this machine's core count; raise it for handlers that wait on I/O.
    public var threads = 2
    /// Items held ready beyond one per thread, so a thread that finishes finds its next item
    /// without a round trip to the broker, or `nil` (the default) for the worker to size it from
    /// what it observes (``LookaheadSizer``): from 1, doubling while its threads run dry and the
    /// broker has more, up to 4,096, and never more than about 50 ms of work per thread or
    /// 64 MiB of items.
    public var lookahead: Int? = nil
    /// The name shown in logs, `drover status` and exit progress. Default `HOST:PID`.
    public var name = defaultPeerName()
    /// Heartbeat interval towards the broker, in milliseconds. Default 1000. A broker that asks
    /// for a shorter one in its `welcome` gets that.
    public var heartbeatMilliseconds: Int32 = 1000
    /// Heartbeat intervals of broker silence before the worker registers again. Default 3.
    /// Once welcomed, the broker's own liveness window (`welcome`'s `liveness-ms`) is used: it
    /// drops a silent peer after that, whatever this worker was told.
    public var liveness: Int32 = 3
    /// How long a drain started by SIGTERM may let running items finish, in milliseconds.
    /// A fleet exit carries its own deadline. Default 30 s.
    public var drainDeadlineMilliseconds: UInt32 = 30_000
    /// How long one item may run, in milliseconds, or `nil` for no limit (the default). Past it
    /// an `--exec` or `--serve` handler is killed (its whole process group) and the item fails
    /// with "timed out after N s", retried per the queue's policy. A Swift closure sees the
    /// deadline in ``WorkItem/deadline`` and must stop by itself: a thread cannot be killed.
    public var itemTimeoutMilliseconds: UInt32? = nil
    /// A file to write once the worker is registered with the broker (for scripts, tests and
    /// readiness probes). Its modification time is then refreshed every heartbeat while the
    /// worker's I/O thread runs, whether or not the broker is reachable (for liveness probes).
    public var readyFile: String? = nil

    public init(broker: String) {
        self.broker = broker
    }

    /// Outcomes gathered into one `done` while more jobs are queued, for a worker that holds
    /// `capacity` items: an eighth of it, so a deep pool reports (and regains credit) in
    /// batches, and a small one item by item.
    static func outcomeBatch(capacity: Int) -> Int { min(max(capacity / 8, 1), 256) }
}

/// How a worker's run ended.
public enum WorkerExit: Sendable, Equatable {
    /// Every running item finished and the broker acknowledged the goodbye.
    case drained(reason: String)
    /// The drain deadline passed: `abandoned` running items were handed back for redelivery.
    case deadlinePassed(abandoned: Int)
    /// Stopped at once (a second SIGTERM); the broker redelivers what was leased.
    case stopped

    /// The code of the goodbye that ends this way.
    var byeCode: ByeCode {
        switch self {
        case .drained: .drained
        case .deadlinePassed: .deadlinePassed
        case .stopped: .stoppedAtOnce
        }
    }
}
