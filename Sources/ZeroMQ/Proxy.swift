import CZeroMQ

/// Forwards messages between `frontend` and `backend` in libzmq's own loop until the context
/// is shut down (then it throws ``ZMQError/contextTerminated``). Both sockets belong to the
/// calling thread. The corresponding C function is `zmq_proxy`.
public func zmqProxy(frontend: borrowing ZMQSocket, backend: borrowing ZMQSocket) throws(ZMQError) {
    _ = try zmqCall("zmq_proxy") { zmq_proxy(frontend.handle, backend.handle, nil) }
}
