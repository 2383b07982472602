import CZeroMQ

#if canImport(Glibc)
import Glibc
#endif

/// The one gate every `zmq_*` call in this module goes through, except those that cannot fail
/// on valid arguments: a message's accessors (`zmq_msg_init`, `_data`, `_more`, `_close`) and
/// `zmq_version`, `zmq_errno`, `zmq_strerror`. Calls that return a handle go through
/// ``zmqHandle(_:_:)``.
///
/// - retries `EINTR` (a signal arrived during a blocking call),
/// - returns `nil` for `EAGAIN` (nothing to receive, or the send would block),
/// - stops the process for errors that only a programming mistake can cause (`EFAULT`, `ENOTSOCK`),
/// - throws a ``ZMQError`` carrying the errno and the operation for everything else.
@inline(__always)
func zmqCall(_ operation: @autoclosure () -> String, _ body: () -> Int32) throws(ZMQError) -> Int32? {
    while true {
        let rc = body()
        if rc >= 0 { return rc }
        let err = zmq_errno()
        switch err {
        case EINTR:
            continue
        case EAGAIN:
            return nil
        case EFAULT, ENOTSOCK:
            preconditionFailure("\(operation()): \(String(cString: zmq_strerror(err))) (a Drover bug)")
        default:
            throw ZMQError(operation: operation(), errno: err)
        }
    }
}

/// The gate for calls that return a handle (`zmq_ctx_new`, `zmq_socket`): `nil` is a failure,
/// thrown as a ``ZMQError`` with libzmq's errno.
func zmqHandle(_ operation: @autoclosure () -> String, _ body: () -> UnsafeMutableRawPointer?) throws(ZMQError) -> UnsafeMutableRawPointer {
    guard let handle = body() else { throw ZMQError(operation: operation(), errno: zmq_errno()) }
    return handle
}
