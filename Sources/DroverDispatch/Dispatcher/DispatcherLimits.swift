import DequeModule
import DroverProtocol

/// Limits and policies the dispatcher enforces. Defaults suit one broker per fleet.
public struct DispatcherLimits: Sendable {
    /// Largest item payload accepted, in bytes.
    public var maxItemBytes: Int
    /// Most items held (queued, leased, waiting to retry, dead); more are refused as "queue full".
    public var maxItems: Int
    /// Milliseconds of silence after which a worker is declared dead and its items redelivered.
    public var workerLivenessMilliseconds: Int64
    /// Failed deliveries (the handler failed, or its worker died running it) after which an
    /// item goes to the dead-letter store. Default 5.
    public var maxDeliveries: Int = 5
    /// Per-queue overrides of ``maxDeliveries``.
    public var queueMaxDeliveries: [String: Int] = [:]
    /// Backoff before the first retry; each further retry doubles it, with jitter (a uniform
    /// draw between half and all of it) so that failing items do not retry in lock-step.
    /// Default 500 ms.
    public var retryBaseMilliseconds: Int64 = 500
    /// Longest backoff. Default 60 s.
    public var retryMaxMilliseconds: Int64 = 60_000
    /// How many completed ids are remembered to drop duplicates. Default 100,000.
    public var dedupWindow: Int = 100_000
    /// Most result bytes kept for completed ids, to answer a resubmission. Default 64 MiB.
    public var dedupPayloadBytes: Int = 64 << 20
    /// Payload bytes of queued items kept in memory. With a journal, past it the payloads of
    /// the items queued last are dropped from memory and read back from the journal when they
    /// are dispatched; without one, producers are told "queue full" past it. Default 1 GiB.
    public var memoryLimitBytes: Int = 1 << 30
    /// Most payload bytes held in all, in memory or on disk; past it producers are told "queue
    /// full". 0: no limit but the disk (and ``maxItems``).
    public var maxHeldBytes: Int = 0

    public init(maxItemBytes: Int, maxItems: Int, workerLivenessMilliseconds: Int64) {
        self.maxItemBytes = maxItemBytes
        self.maxItems = maxItems
        self.workerLivenessMilliseconds = workerLivenessMilliseconds
    }

    /// The delivery cap for `queue`.
    public func maxDeliveries(for queue: String) -> Int { queueMaxDeliveries[queue] ?? maxDeliveries }
}

extension Dispatcher {
    /// An accepted item, wherever it is.
    struct Item: Sendable {
        var id: ItemID
        var queue: String
        /// A slice of the `submit` frame it came in while it is queued or running: items of one
        /// batch come and go together, so sharing the frame saves a copy and an allocation per
        /// item. An item that may stay long (waiting to retry, dead) gets its own copy
        /// (``ItemTable/ownPayload(_:)``), so that it does not keep its whole batch's frame alive.
        var payload: ArraySlice<UInt8>
        /// Deliveries made so far; the next delivery's attempt is `deliveries + 1`.
        var deliveries: UInt32 = 0
        /// Deliveries that failed or whose worker died; counted against the queue's cap.
        var failures: UInt32 = 0
        /// The producer's limit on running it, in milliseconds (`send --item-timeout`); 0: none.
        var timeoutMilliseconds: UInt32 = 0
        /// Acceptance order, so items handed back return to the queue in their original order.
        var sequence: UInt64
        /// The journal segment holding its latest full record (``ItemTable/noSegment``: none),
        /// and where its payload is in that segment: read back from there when the payload was
        /// dropped from memory (``isSpilled``).
        var segment = ItemTable.noSegment
        var payloadOffset: UInt32 = 0
        var payloadLength: UInt32

        init(id: ItemID, queue: String, payload: ArraySlice<UInt8>, timeoutMilliseconds: UInt32 = 0, sequence: UInt64) {
            self.id = id
            self.queue = queue
            self.payload = payload
            self.timeoutMilliseconds = timeoutMilliseconds
            self.sequence = sequence
            self.payloadLength = UInt32(payload.count)
        }

        /// The payload is not in memory (it is read back from the journal when needed).
        var isSpilled: Bool { payload.count != Int(payloadLength) }
    }

    struct WorkerRecord: Sendable {
        /// Never reused while the broker runs; a lease names its worker by this number.
        var number: UInt32
        var name: String
        var queue: String
        var concurrency: Int
        var credit = 0
        /// The first slot of this worker's lease list (``ItemTable/none`` when empty).
        var leaseHead = ItemTable.none
        var leased = 0
        var lastSeen: Int64
        var draining = false
        /// A `deliver` met its full pipe: it gets nothing until it is heard from again.
        var stalled = false
        var completed = 0
        /// How its handler processes fare, as it last said (`handler-state`).
        var handler = HandlerHealth()
        var handedBack = 0
    }

    /// An item waiting out its retry backoff.
    struct Retry: Sendable {
        var due: Int64
        var slot: UInt32
    }

    struct QueueState: Sendable {
        /// Slots of queued items, in delivery order.
        var items: Deque<UInt32> = []
        /// Workers with credit, least recently served first.
        var ready: Deque<PeerID> = []
    }

    /// Why a worker left the broker's books.
    public enum Departure: Sendable, Equatable {
        /// It said goodbye, with its code and reason.
        case bye(ByeCode, String)
        /// It stopped heartbeating for longer than the liveness window.
        case silent
        /// The ROUTER could no longer route to it.
        case unreachable
    }

    /// Counters for status and logs.
    public struct Counters: Sendable, Codable, Equatable {
        public var accepted = 0
        public var rejected = 0
        public var duplicates = 0
        public var delivered = 0
        public var completed = 0
        public var failed = 0
        public var retried = 0
        public var deadLettered = 0
        public var handedBack = 0
        public var redelivered = 0
        public var staleOutcomes = 0
        /// Leases a worker no longer held when it registered again (a dropped connection took
        /// their delivery or their outcome): returned to the queue.
        public var reclaimed = 0
    }
}

/// A worker that has left, remembered for status and for `drover exit` progress.
public struct DepartedWorker: Sendable, Equatable {
    public var name: String
    public var queue: String
    public var departure: Dispatcher.Departure
    public var completed: Int
    public var itemsReturned: Int
    /// When it left, in the broker's clock milliseconds.
    public var at: Int64
}

/// A small, fast, seedable generator for retry jitter (so tests can fix the seed).
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
