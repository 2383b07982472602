/// What an ``ItemSource`` has for the producer right now.
public enum NextItem {
    case item([UInt8])
    /// Nothing yet (input is still coming): the producer sends what it has batched and waits.
    case notYet
    /// An item the source could not give whole (a line over the broker's limit): it counts as
    /// read and not accepted, with this reason, and the producer goes on with the next.
    case refused(String)
    /// No more items.
    case end
}

/// Items that arrive over time, such as lines on a pipe. `next()` never blocks; when it says
/// ``NextItem/notYet`` the producer flushes its batch, so a lone item goes out at once, and
/// waits for the broker or for ``fileDescriptor`` to become readable.
public protocol ItemSource {
    mutating func next() -> NextItem
    /// A descriptor that becomes readable when more items may be ready, or `nil`.
    var fileDescriptor: Int32? { get }
}
