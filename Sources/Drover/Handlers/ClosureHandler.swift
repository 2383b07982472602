/// A handler made from a closure: the Swift API for in-thread handlers.
public struct ClosureHandler: WorkHandler {
    private let body: @Sendable (WorkItem) throws -> [UInt8]

    public init(_ body: @escaping @Sendable (WorkItem) throws -> [UInt8]) {
        self.body = body
    }

    public func handle(_ item: WorkItem) throws -> [UInt8] { try body(item) }
}
