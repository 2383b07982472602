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

/// A handler that sleeps as many milliseconds as its item's text says ("1000": one second)
/// and returns nothing: a queue of mixed short and long items, for the lookahead's fairness.
public struct PayloadSleepHandler: WorkHandler {
    public init() {}
    public func handle(_ item: WorkItem) throws -> [UInt8] {
        guard let ms = UInt32(String(decoding: item.payload, as: UTF8.self)) else {
            throw HandlerFailure("the payload-ms bench handler takes items that are a number of milliseconds")
        }
        usleep(ms * 1000)
        return []
    }
}
