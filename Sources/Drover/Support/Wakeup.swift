import CDroverShims

#if canImport(Glibc)
import Glibc
#endif

/// Wakes a thread blocked in `zmq_poll` from any other thread: an eventfd that the polling
/// thread watches. Signalling is cheap and coalesces (many signals, one wake-up).
public final class Wakeup: Sendable {
    /// The file descriptor to add to a ``ZMQPoller``.
    public let fileDescriptor: Int32

    public init() {
        let fd = drover_eventfd()
        precondition(fd >= 0, "eventfd failed: errno \(errno)")
        fileDescriptor = fd
    }

    /// Wakes the polling thread. Safe from any thread, including a signal handler's dispatch queue.
    public func signal() {
        var one: UInt64 = 1
        _ = write(fileDescriptor, &one, 8)
    }

    /// Clears pending signals; call on the polling thread after the fd polls readable.
    public func clear() {
        var value: UInt64 = 0
        _ = read(fileDescriptor, &value, 8)
    }

    deinit { close(fileDescriptor) }
}
