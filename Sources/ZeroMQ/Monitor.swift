import CZeroMQ

/// A connection event of a monitored socket (see ``ZMQSocket/monitor(_:)``).
public struct ZMQMonitorEvent: Sendable, Equatable {
    /// Which events to report; libzmq's `ZMQ_EVENT_*` bits.
    public struct Kinds: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// A connection was made (the value is its file descriptor).
        public static let connected = Kinds(rawValue: ZMQ_EVENT_CONNECTED)
        /// A connection was lost: whatever was queued on it, both ways, is gone.
        public static let disconnected = Kinds(rawValue: ZMQ_EVENT_DISCONNECTED)
        /// A connection was accepted by a bound socket.
        public static let accepted = Kinds(rawValue: ZMQ_EVENT_ACCEPTED)
        /// A handshake failed before authentication: the peer closed it (a CURVE client that
        /// has the wrong server key sees this), or it timed out. The value is an errno.
        public static let handshakeFailedNoDetail = Kinds(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        /// A handshake failed on a protocol error, such as a security mechanism mismatch
        /// (a plaintext peer meeting a CURVE one). The value is a `ZMQ_PROTOCOL_ERROR_*` code.
        public static let handshakeFailedProtocol = Kinds(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        /// The server's ZAP handler refused this peer. The value is the ZAP status code (400).
        public static let handshakeFailedAuth = Kinds(rawValue: ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        /// A handshake completed (security included).
        public static let handshakeSucceeded = Kinds(rawValue: ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        /// Every handshake outcome.
        public static let handshakes: Kinds = [.handshakeFailedNoDetail, .handshakeFailedProtocol, .handshakeFailedAuth, .handshakeSucceeded]
    }

    public var kind: Kinds
    /// A handshake that failed because the peer's CURVE hello could not be decrypted: it does
    /// not have this server's public key (a wrong `--broker-key`).
    public var isCryptographicFailure: Bool {
        kind == .handshakeFailedProtocol && Int32(bitPattern: value) == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
    }

    /// A handshake that failed because the two sides use different security mechanisms
    /// (a plaintext peer meeting a CURVE one).
    public var isMechanismMismatch: Bool {
        kind == .handshakeFailedProtocol && Int32(bitPattern: value) == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    }
    /// The event's value: a file descriptor, an errno or an interval, by kind.
    public var value: UInt32
    /// The endpoint the event concerns.
    public var endpoint: String
}

extension ZMQSocket {
    /// Starts reporting this socket's `events` and returns the socket they arrive on (an
    /// `inproc` PAIR in the same context, owned by the caller's thread like this one). Call it
    /// before `connect`, so that no event is missed.
    /// The corresponding C function is `zmq_socket_monitor`.
    public func monitor(_ events: ZMQMonitorEvent.Kinds) throws(ZMQError) -> ZMQSocket {
        let endpoint = "inproc://drover-monitor-\(UInt64.random(in: 0...UInt64.max))"
        _ = try zmqCall("zmq_socket_monitor(\(endpoint))") { zmq_socket_monitor(handle, endpoint, events.rawValue) }
        let pair = try ZMQSocket(context, type: .pair, linger: 0)
        try pair.connect(endpoint)
        return pair
    }

    /// Stops reporting events (do it before closing the socket that reads them).
    /// The corresponding C function is `zmq_socket_monitor` with no endpoint.
    public func stopMonitor() {
        guard !closed else { return }
        _ = try? zmqCall("zmq_socket_monitor(nil)") { zmq_socket_monitor(handle, nil, 0) }
    }

    /// Reads one event from a socket that ``monitor(_:)`` returned, or `nil` when none is
    /// waiting (with `dontWait`) or the message is not a monitor event.
    public func receiveMonitorEvent(dontWait: Bool = false) throws(ZMQError) -> ZMQMonitorEvent? {
        guard let frames = try receive(dontWait: dontWait) else { return nil }
        // Frame 1: a 16-bit event number and a 32-bit value, in the host's byte order; frame 2:
        // the endpoint.
        guard frames.count == 2, frames[0].count == 6 else { return nil }
        let number = frames[0].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
        let value = frames[0].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self) }
        return ZMQMonitorEvent(kind: .init(rawValue: Int32(number)), value: value, endpoint: String(decoding: frames[1], as: UTF8.self))
    }
}
