import CZeroMQ

/// A socket option with its typed value. Set with ``ZMQSocket/set(_:)``.
public enum SocketOption: Sendable {
    /// How long unsent messages may delay `close`, in milliseconds. The libzmq default (-1,
    /// forever) makes `zmq_ctx_term` hang; every Drover socket sets a bounded value.
    case linger(milliseconds: Int32)
    /// Make a ROUTER report an unroutable message as `EHOSTUNREACH` instead of dropping it.
    case routerMandatory(Bool)
    /// Let a new connection with an identity already in use take it over (a restarted peer).
    case routerHandover(Bool)
    /// Largest inbound frame accepted; a peer that sends a larger one is disconnected.
    case maxMessageSize(bytes: Int64)
    /// Interval between ZMTP PINGs on each connection, in milliseconds.
    case heartbeatInterval(milliseconds: Int32)
    /// How long to wait for traffic after a PING before closing the connection.
    case heartbeatTimeout(milliseconds: Int32)
    /// The time-to-live this side asks the peer to apply to the connection.
    case heartbeatTTL(milliseconds: Int32)
    /// First reconnect delay after a connection is lost.
    case reconnectInterval(milliseconds: Int32)
    /// Upper bound for the exponential reconnect back-off.
    case reconnectIntervalMax(milliseconds: Int32)
    /// Queue outbound messages only to completed connections, so a send fails fast
    /// (`EAGAIN`) while no peer is connected.
    case immediate(Bool)
    /// The identity this socket presents to a ROUTER peer.
    case routingID([UInt8])
    /// A SUB socket's subscription prefix (empty: everything).
    case subscribe([UInt8])
    /// Outbound high-water mark, in messages.
    case sendHighWaterMark(Int32)
    /// Inbound high-water mark, in messages.
    case receiveHighWaterMark(Int32)
    /// Timeout for a blocking send, in milliseconds (-1 forever).
    case sendTimeout(milliseconds: Int32)
    /// Timeout for a blocking receive, in milliseconds (-1 forever).
    case receiveTimeout(milliseconds: Int32)
    /// Act as a CURVE server.
    case curveServer(Bool)
    /// This socket's long-term CURVE public key (32 bytes).
    case curvePublicKey([UInt8])
    /// This socket's long-term CURVE secret key (32 bytes).
    case curveSecretKey([UInt8])
    /// A CURVE client's view of the server's public key (32 bytes).
    case curveServerKey([UInt8])
    /// The ZAP domain this socket authenticates in.
    case zapDomain(String)
    /// Refuse clients when no ZAP handler approves them, even in the default domain.
    /// Option 93, honoured by Debian's libzmq 4.3.4 but not declared in its header.
    case zapEnforceDomain(Bool)

    /// How long a new connection may take to complete its handshake before it is dropped.
    case handshakeInterval(milliseconds: Int32)

    func apply(to socket: UnsafeMutableRawPointer) throws(ZMQError) {
        switch self {
        case .handshakeInterval(let v): try setInt(socket, ZMQ_HANDSHAKE_IVL, v, "ZMQ_HANDSHAKE_IVL")
        case .linger(let v): try setInt(socket, ZMQ_LINGER, v, "ZMQ_LINGER")
        case .routerMandatory(let v): try setInt(socket, ZMQ_ROUTER_MANDATORY, v ? 1 : 0, "ZMQ_ROUTER_MANDATORY")
        case .routerHandover(let v): try setInt(socket, ZMQ_ROUTER_HANDOVER, v ? 1 : 0, "ZMQ_ROUTER_HANDOVER")
        case .maxMessageSize(let v): try setValue(socket, ZMQ_MAXMSGSIZE, v, "ZMQ_MAXMSGSIZE")
        case .heartbeatInterval(let v): try setInt(socket, ZMQ_HEARTBEAT_IVL, v, "ZMQ_HEARTBEAT_IVL")
        case .heartbeatTimeout(let v): try setInt(socket, ZMQ_HEARTBEAT_TIMEOUT, v, "ZMQ_HEARTBEAT_TIMEOUT")
        case .heartbeatTTL(let v): try setInt(socket, ZMQ_HEARTBEAT_TTL, v, "ZMQ_HEARTBEAT_TTL")
        case .reconnectInterval(let v): try setInt(socket, ZMQ_RECONNECT_IVL, v, "ZMQ_RECONNECT_IVL")
        case .reconnectIntervalMax(let v): try setInt(socket, ZMQ_RECONNECT_IVL_MAX, v, "ZMQ_RECONNECT_IVL_MAX")
        case .immediate(let v): try setInt(socket, ZMQ_IMMEDIATE, v ? 1 : 0, "ZMQ_IMMEDIATE")
        case .routingID(let v): try setBytes(socket, ZMQ_ROUTING_ID, v, "ZMQ_ROUTING_ID")
        case .subscribe(let v): try setBytes(socket, ZMQ_SUBSCRIBE, v, "ZMQ_SUBSCRIBE")
        case .sendHighWaterMark(let v): try setInt(socket, ZMQ_SNDHWM, v, "ZMQ_SNDHWM")
        case .receiveHighWaterMark(let v): try setInt(socket, ZMQ_RCVHWM, v, "ZMQ_RCVHWM")
        case .sendTimeout(let v): try setInt(socket, ZMQ_SNDTIMEO, v, "ZMQ_SNDTIMEO")
        case .receiveTimeout(let v): try setInt(socket, ZMQ_RCVTIMEO, v, "ZMQ_RCVTIMEO")
        case .curveServer(let v): try setInt(socket, ZMQ_CURVE_SERVER, v ? 1 : 0, "ZMQ_CURVE_SERVER")
        case .curvePublicKey(let v): try setBytes(socket, ZMQ_CURVE_PUBLICKEY, v, "ZMQ_CURVE_PUBLICKEY")
        case .curveSecretKey(let v): try setBytes(socket, ZMQ_CURVE_SECRETKEY, v, "ZMQ_CURVE_SECRETKEY")
        case .curveServerKey(let v): try setBytes(socket, ZMQ_CURVE_SERVERKEY, v, "ZMQ_CURVE_SERVERKEY")
        case .zapDomain(let v): try setBytes(socket, ZMQ_ZAP_DOMAIN, Array(v.utf8), "ZMQ_ZAP_DOMAIN")
        case .zapEnforceDomain(let v): try setInt(socket, ZMQ_ZAP_ENFORCE_DOMAIN, v ? 1 : 0, "ZMQ_ZAP_ENFORCE_DOMAIN")
        }
    }
}

private func setInt(_ socket: UnsafeMutableRawPointer, _ option: Int32, _ value: Int32, _ name: String) throws(ZMQError) {
    try setValue(socket, option, value, name)
}

private func setValue<T>(_ socket: UnsafeMutableRawPointer, _ option: Int32, _ value: T, _ name: String) throws(ZMQError) {
    var value = value
    _ = try zmqCall("zmq_setsockopt(\(name))") {
        zmq_setsockopt(socket, option, &value, MemoryLayout<T>.size)
    }
}

private func setBytes(_ socket: UnsafeMutableRawPointer, _ option: Int32, _ value: [UInt8], _ name: String) throws(ZMQError) {
    _ = try zmqCall("zmq_setsockopt(\(name))") {
        value.withUnsafeBytes { zmq_setsockopt(socket, option, $0.baseAddress, $0.count) }
    }
}
