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
        var payload: [UInt8]
        /// Deliveries made so far; the next delivery's attempt is `deliveries + 1`.
        var deliveries: UInt32 = 0
        /// Deliveries that failed or whose worker died; counted against the queue's cap.
        var failures: UInt32 = 0
        var lastError = ""
        /// Acceptance order, so items handed back return to the queue in their original order.
        var sequence: UInt64
    }

    struct Lease: Sendable {
        var item: Item
        var worker: PeerID
        var attempt: UInt32
    }

    struct WorkerRecord: Sendable {
        var name: String
        var queue: String
        var concurrency: Int
        var credit = 0
        var leased: Set<ItemID> = []
        var lastSeen: Int64
        var draining = false
        var completed = 0
        var handedBack = 0
    }

    struct QueueState: Sendable {
        var items: Deque<Item> = []
        /// Workers with credit, least recently served first.
        var ready: Deque<PeerID> = []
    }

    struct DeadLetter: Sendable {
        var item: Item
        /// When it died, on the broker's clock.
        var at: Int64
    }

    /// Why a worker left the broker's books.
    public enum Departure: Sendable, Equatable {
        /// It said goodbye, with its reason.
        case bye(String)
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

/// The outcomes of recently completed items, so a resubmitted id is recognised (and its
/// result sent again) instead of run twice. Bounded by count and by payload bytes; the oldest
/// entries go first.
struct RecentOutcomes: Sendable {
    private var entries: [ItemID: ItemOutcome?] = [:]
    private var order: Deque<ItemID> = []
    private var payloadBytes = 0
    let capacity: Int
    let payloadBudget: Int

    init(capacity: Int, payloadBudget: Int) {
        self.capacity = capacity
        self.payloadBudget = payloadBudget
    }

    /// `nil` when the id is unknown; `.some(nil)` when known but its outcome was not kept.
    func outcome(_ id: ItemID) -> ItemOutcome?? { entries[id] }

    /// Remembers a completion; the outcome is kept only when someone may ask for it again.
    mutating func remember(_ id: ItemID, outcome: ItemOutcome?) {
        guard capacity > 0, entries[id] == nil else { return }
        entries[id] = .some(outcome)
        order.append(id)
        payloadBytes += outcome?.payload.count ?? 0
        while order.count > capacity || payloadBytes > payloadBudget, let oldest = order.popFirst() {
            if let gone = entries.removeValue(forKey: oldest) { payloadBytes -= gone?.payload.count ?? 0 }
        }
    }
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
