import CZeroMQ

/// An error returned by libzmq, with the operation that failed and the errno it set.
///
/// Equality compares the kind only, so `error == .contextTerminated` works whatever the operation.
public struct ZMQError: Error, Equatable, CustomStringConvertible, Sendable {
    private enum Code: Equatable, Sendable {
        case contextTerminated
        case hostUnreachable
        case invalidEndpoint
        case invalidArgument
        case addressInUse
        case messageTooLarge
        case system(Int32)
    }

    private let code: Code
    /// The operation that failed, for example `"zmq_bind(tcp://*:5555)"`.
    public let operation: String
    /// The errno that libzmq reported.
    public let errno: Int32

    /// The context was shut down or terminated; the socket's thread should close it and stop.
    public static let contextTerminated = ZMQError(code: .contextTerminated, operation: "", errno: ETERM)
    /// A ROUTER socket with `ZMQ_ROUTER_MANDATORY` had no peer with that identity.
    public static let hostUnreachable = ZMQError(code: .hostUnreachable, operation: "", errno: EHOSTUNREACH)
    /// The endpoint string is malformed or names an unsupported transport.
    public static let invalidEndpoint = ZMQError(code: .invalidEndpoint, operation: "", errno: EINVAL)
    /// An option value or argument libzmq refused (`EINVAL` outside bind and connect).
    public static let invalidArgument = ZMQError(code: .invalidArgument, operation: "", errno: EINVAL)
    /// The address is already bound by another socket or process.
    public static let addressInUse = ZMQError(code: .addressInUse, operation: "", errno: EADDRINUSE)

    init(operation: String, errno: Int32) {
        let code: Code
        switch errno {
        case ETERM: code = .contextTerminated
        case EHOSTUNREACH: code = .hostUnreachable
        case EADDRINUSE: code = .addressInUse
        case EMSGSIZE: code = .messageTooLarge
        // These mean a bad endpoint only from bind and connect; EINVAL from setsockopt is a bad
        // option value.
        case EINVAL, EPROTONOSUPPORT, ENODEV, ENOENT:
            code = operation.hasPrefix("zmq_bind") || operation.hasPrefix("zmq_connect") ? .invalidEndpoint
                : errno == EINVAL ? .invalidArgument : .system(errno)
        default: code = .system(errno)
        }
        self.init(code: code, operation: operation, errno: errno)
    }

    private init(code: Code, operation: String, errno: Int32) {
        self.code = code
        self.operation = operation
        self.errno = errno
    }

    public static func == (lhs: ZMQError, rhs: ZMQError) -> Bool { lhs.code == rhs.code }

    /// libzmq's own text for the errno.
    public var reason: String { String(cString: zmq_strerror(errno)) }

    public var description: String { "\(operation) failed: \(reason) (errno \(errno))" }
}
