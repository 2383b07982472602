/// How many items a worker holds beyond one per thread, when `--lookahead` does not fix it.
///
/// Two observations decide it, both made by the worker itself:
/// - **Starvation.** Items arrived that used up all the credit the broker held for us (so the
///   broker has more waiting), and no item was waiting for a thread when they came: the
///   threads ran dry while the round trip to the broker was under way. The lookahead doubles.
///   Tiny items reach thousands within a dozen round trips.
/// - **How long items take.** Whatever starvation asks for, the items waiting here may add up
///   to at most ``queueBudgetMicroseconds`` of work per thread: a worker whose items take half a
///   second holds one beyond its threads, so it never sits on items another worker's free thread
///   could start. The limit follows the recent average, so a queue whose items turn slow
///   shrinks the lookahead at once (credit is then returned more slowly, not taken back).
/// - **How large items are.** The items waiting here may also add up to at most
///   ``queueBudgetBytes`` (from the recent average payload size), so fast handlers of large
///   items do not make a worker hold thousands of megabytes.
///
/// It starts at 1, today's fixed default, and learns from there. Pure: no clock of its own.
struct LookaheadSizer: Equatable {
    let threads: Int
    /// `--lookahead N`: never changes.
    let fixed: Int?
    private(set) var lookahead: Int
    /// Recent average time a handler thread spends on one item, in microseconds; nil until the
    /// first item ends.
    private(set) var serviceMicroseconds: Double?
    /// Recent average payload size of the items delivered, in bytes; nil until the first.
    private(set) var payloadBytes: Double?

    /// The largest lookahead it grows to: deep enough for no-op items to keep a 2-core
    /// machine's handler threads busy (the fixed `--lookahead 4096` that `drover bench` used).
    static let maxLookahead = 4096
    /// Most work, per handler thread, that may wait in a worker's queue: 50 ms.
    static let queueBudgetMicroseconds = 50_000.0
    /// Most payload bytes that may wait in a worker's queue: 64 MiB.
    static let queueBudgetBytes = 64.0 * 1024 * 1024
    /// Weight of the newest item in the average time per item.
    static let smoothing = 1.0 / 16

    init(threads: Int, fixed: Int?) {
        self.threads = threads
        self.fixed = fixed
        lookahead = fixed ?? 1
    }

    /// The most items the worker may ever hold: what its books and pool are sized for.
    var maxCapacity: Int { threads + (fixed ?? Self.maxLookahead) }
    /// The items the worker wants to hold now.
    var capacity: Int { threads + lookahead }

    /// The largest lookahead the time per item and the size of items allow.
    var limit: Int {
        var items = Double(Self.maxLookahead)
        if let service = serviceMicroseconds, service > 0 { items = min(items, Double(threads) * Self.queueBudgetMicroseconds / service) }
        if let bytes = payloadBytes, bytes > 0 { items = min(items, Self.queueBudgetBytes / bytes) }
        return Int(max(1, items.rounded(.down)))
    }

    /// Items arrived, of these payload sizes.
    mutating func received<C: Collection>(payloadBytes sizes: C) where C.Element == Int {
        guard fixed == nil, !sizes.isEmpty else { return }
        for size in sizes {
            let sample = Double(size)
            payloadBytes = payloadBytes.map { $0 + (sample - $0) * Self.smoothing } ?? sample
        }
        lookahead = min(lookahead, limit)
    }

    /// Items ended, having taken `microseconds` of a thread each.
    mutating func finished<C: Collection>(microseconds: C) where C.Element == UInt32 {
        guard fixed == nil, !microseconds.isEmpty else { return }
        for time in microseconds {
            let sample = Double(time)
            serviceMicroseconds = serviceMicroseconds.map { $0 + (sample - $0) * Self.smoothing } ?? sample
        }
        lookahead = min(lookahead, limit)
    }

    /// The threads ran dry while the broker had more: hold more, within the limit.
    mutating func starved() {
        guard fixed == nil, serviceMicroseconds != nil else { return }  // no growth before an item has ended
        lookahead = max(lookahead, min(lookahead * 2, limit))
    }
}
