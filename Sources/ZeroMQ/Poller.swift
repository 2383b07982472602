import CZeroMQ

/// Waits for readiness on several sockets and file descriptors at once.
///
/// Used by the thread that owns the sockets; a file descriptor (an eventfd or a pipe) is how
/// other threads wake that thread up.
public struct ZMQPoller: ~Copyable {
    private var items: [zmq_pollitem_t] = []

    public init() {}

    /// Watches `socket` for incoming messages; returns the index to look up in ``poll(timeout:)``'s result.
    public mutating func add(_ socket: borrowing ZMQSocket) -> Int {
        items.append(zmq_pollitem_t(socket: socket.handle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Watches file descriptor `fd` for readability; returns its index.
    public mutating func add(fileDescriptor fd: Int32) -> Int {
        items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0))
        return items.count - 1
    }

    /// Blocks up to `milliseconds` (-1: forever) and returns, for each watched item, whether it is readable.
    /// The corresponding C function is `zmq_poll`.
    public mutating func poll(timeout milliseconds: Int) throws(ZMQError) -> [Bool] {
        for index in items.indices { items[index].revents = 0 }
        let count = Int32(items.count)
        let ready = try items.withUnsafeMutableBufferPointer { (buffer) throws(ZMQError) -> Int32? in
            try zmqCall("zmq_poll") { zmq_poll(buffer.baseAddress, count, milliseconds) }
        }
        if ready == nil || ready == 0 { return Array(repeating: false, count: items.count) }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
