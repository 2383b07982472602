import CZeroMQ

/// The socket types the fleet uses.
public enum SocketType: Sendable {
    case router, dealer, pub, sub, push, pull, pair, req, rep

    var raw: Int32 {
        switch self {
        case .router: ZMQ_ROUTER
        case .dealer: ZMQ_DEALER
        case .pub: ZMQ_PUB
        case .sub: ZMQ_SUB
        case .push: ZMQ_PUSH
        case .pull: ZMQ_PULL
        case .pair: ZMQ_PAIR
        case .req: ZMQ_REQ
        case .rep: ZMQ_REP
        }
    }
}

/// One frame of a multipart message.
public typealias Frame = [UInt8]

/// A ZeroMQ socket. Not `Sendable`: it belongs to the thread that created it, which alone
/// sends, receives and closes it. Other threads reach that thread through a queue and a wake-up.
public final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    // Keeps the context alive while the socket is open: zmq_ctx_term waits for every socket.
    let context: ZMQContext
    // A zmq_msg_t holds small messages inline, so it needs one stable address from init to close.
    private let message: UnsafeMutablePointer<zmq_msg_t>
    private(set) var closed = false

    /// Creates a socket of `type` in `context`, with a bounded linger so closing never hangs.
    /// The corresponding C function is `zmq_socket`.
    public init(_ context: ZMQContext, type: SocketType, linger milliseconds: Int32 = 200) throws(ZMQError) {
        handle = try zmqHandle("zmq_socket") { zmq_socket(context.handle, type.raw) }
        self.context = context
        self.message = .allocate(capacity: 1)
        try set(.linger(milliseconds: milliseconds))
    }

    /// Sets one socket option. The corresponding C function is `zmq_setsockopt`.
    public func set(_ option: SocketOption) throws(ZMQError) {
        try option.apply(to: handle)
    }

    /// Binds to `endpoint`, for example `tcp://*:5555` or `tcp://127.0.0.1:*`.
    /// The corresponding C function is `zmq_bind`.
    public func bind(_ endpoint: String) throws(ZMQError) {
        _ = try zmqCall("zmq_bind(\(endpoint))") { zmq_bind(handle, endpoint) }
    }

    /// Connects to `endpoint`; the connection itself is made, and remade, in the background.
    /// The corresponding C function is `zmq_connect`.
    public func connect(_ endpoint: String) throws(ZMQError) {
        _ = try zmqCall("zmq_connect(\(endpoint))") { zmq_connect(handle, endpoint) }
    }

    /// Drops the connection to `endpoint` (what is queued for it is discarded); `connect` again
    /// to start over. The corresponding C function is `zmq_disconnect`.
    public func disconnect(_ endpoint: String) throws(ZMQError) {
        _ = try zmqCall("zmq_disconnect(\(endpoint))") { zmq_disconnect(handle, endpoint) }
    }

    /// The endpoint this socket last bound, with a wildcard port resolved (`tcp://127.0.0.1:41234`).
    /// The corresponding C function is `zmq_getsockopt(ZMQ_LAST_ENDPOINT)`.
    public func lastEndpoint() throws(ZMQError) -> String {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        _ = try zmqCall("zmq_getsockopt(ZMQ_LAST_ENDPOINT)") {
            zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size)
        }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sends `frames` as one multipart message.
    ///
    /// Returns `false` when `dontWait` is set and the message cannot be queued now (`EAGAIN`):
    /// nothing was sent. Throws ``ZMQError/hostUnreachable`` for an unknown ROUTER peer.
    /// The corresponding C function is `zmq_send`.
    @discardableResult
    public func send(_ frames: [Frame], dontWait: Bool = false) throws(ZMQError) -> Bool {
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        let base: Int32 = dontWait ? ZMQ_DONTWAIT : 0
        for index in frames.indices {
            let flags = index == frames.count - 1 ? base : base | ZMQ_SNDMORE
            let sent = try zmqCall("zmq_send") {
                frames[index].withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            }
            // libzmq queues a multipart message atomically: only the first frame can be refused.
            if sent == nil { return false }
        }
        return true
    }

    /// Receives one multipart message, or `nil` when `dontWait` is set and none is waiting.
    /// Frames are sized to what arrived; there is no fixed buffer.
    /// The corresponding C function is `zmq_msg_recv`.
    public func receive(dontWait: Bool = false) throws(ZMQError) -> [Frame]? {
        try receive(dontWait: dontWait, reading: nil)?.frames
    }

    /// Receives one multipart message with the value of the connection property `property`
    /// (for example `"User-Id"`, which a ZAP handler set when the sender's handshake was
    /// authenticated; `nil` when the connection has none).
    /// The corresponding C functions are `zmq_msg_recv` and `zmq_msg_gets`.
    public func receive(dontWait: Bool = false, property: String) throws(ZMQError) -> (frames: [Frame], property: String?)? {
        try receive(dontWait: dontWait, reading: property)
    }

    private func receive(dontWait: Bool, reading property: String?) throws(ZMQError) -> (frames: [Frame], property: String?)? {
        var frames: [Frame] = []
        var value: String?
        let flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
        var more = false
        repeat {
            zmq_msg_init(message)
            defer { zmq_msg_close(message) }
            // Only the first frame may be missing; later parts of a message arrive together.
            guard let size = try zmqCall("zmq_msg_recv", { zmq_msg_recv(message, handle, frames.isEmpty ? flags : 0) }) else {
                return nil
            }
            let data = zmq_msg_data(message)
            // Copied from a buffer pointer: cheaper than `init(unsafeUninitializedCapacity:)`.
            frames.append(size > 0 && data != nil ? Frame(UnsafeBufferPointer(start: data!.assumingMemoryBound(to: UInt8.self), count: Int(size))) : [])
            more = zmq_msg_more(message) != 0
            // The peer's frames carry the connection's properties (a ROUTER's identity frame,
            // made locally, does not): read them from the last one.
            if !more, let property, let text = zmq_msg_gets(message, property) { value = String(cString: text) }
        } while more
        return (frames, value)
    }

    /// Receives one multipart message and drops it without copying, returning how many frames
    /// it had (`nil` when `dontWait` is set and none is waiting). For benchmarks and sinks.
    /// The corresponding C function is `zmq_msg_recv`.
    public func receiveDiscarding(dontWait: Bool = false) throws(ZMQError) -> Int? {
        var count = 0
        var more = false
        repeat {
            zmq_msg_init(message)
            defer { zmq_msg_close(message) }
            guard try zmqCall("zmq_msg_recv", { zmq_msg_recv(message, handle, count == 0 && dontWait ? ZMQ_DONTWAIT : 0) }) != nil else {
                return nil
            }
            count += 1
            more = zmq_msg_more(message) != 0
        } while more
        return count
    }

    /// Closes the socket now. Later calls are programmer errors; `deinit` closes it otherwise.
    /// The corresponding C function is `zmq_close`.
    public func close() {
        guard !closed else { return }
        closed = true
        // Fails only for a handle that is not a socket, which the gate stops as a Drover bug.
        _ = try? zmqCall("zmq_close") { zmq_close(handle) }
    }

    deinit {
        close()
        message.deallocate()
    }
}
