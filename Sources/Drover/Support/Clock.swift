#if canImport(Glibc)
import Glibc
#endif

/// Milliseconds on the monotonic clock: for deadlines and liveness, never for wall time.
@inline(__always)
public func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Microseconds on the monotonic clock: for measuring how long an item takes.
@inline(__always)
func monotonicMicroseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

/// Milliseconds since 1970, for epochs that must grow across process restarts.
public func wallClockMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// Milliseconds from now until `deadline` (monotonic), as `poll` takes them: -1 (wait for
/// ever) without a deadline, 0 once it has passed.
func pollMilliseconds(until deadline: Int64?) -> Int32 {
    guard let deadline else { return -1 }
    return Int32(clamping: max(0, deadline - monotonicMilliseconds()))
}

/// Lets `milliseconds` pass on this thread, for waits that have no event to wait on (a child's
/// exit, without a SIGCHLD handler).
func pause(milliseconds: Int32) {
    var none = pollfd()
    _ = poll(&none, 0, milliseconds)
}
