import CZeroMQ

#if canImport(Glibc)
import Glibc
#endif

/// The one gate every `zmq_*` call in this module goes through.
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
