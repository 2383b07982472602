#if canImport(Glibc)
import Glibc
#endif

/// A handler that does nothing and returns nothing: the fleet's own cost, for `drover bench`.
public struct NoopHandler: WorkHandler {
    public init() {}
    public func handle(_ item: WorkItem) throws -> [UInt8] { [] }
}

/// A handler that sleeps a fixed time and returns nothing: an I/O-bound job, for measuring how
/// well handler threads are kept busy.
public struct SleepHandler: WorkHandler {
    public let microseconds: UInt32
    public init(milliseconds: UInt32) { microseconds = milliseconds * 1000 }
    public func handle(_ item: WorkItem) throws -> [UInt8] {
        usleep(microseconds)
        return []
    }
}
