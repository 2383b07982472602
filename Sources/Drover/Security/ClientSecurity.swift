import ZeroMQ

/// How a client authenticates to a broker or controller that uses keys: its own secret
/// certificate (`--key`) and the server's public one (`--broker-key`, `--controller-key`).
public struct ClientSecurity: Sendable {
    public var certificate: Certificate
    /// The server's public key, in Z85.
    public var serverKey: String

    public init(certificate: Certificate, serverKey: String) {
        self.certificate = certificate
        self.serverKey = serverKey
    }

    /// Loads `--key FILE` (a secret certificate) and the server's certificate; throws a
    /// problem that names the file and the flag.
    public static func load(key: String, serverKey: String, serverFlag: String) throws(Certificate.Problem) -> ClientSecurity {
        let own = try Certificate.load(key)
        guard own.secretKey != nil else {
            throw Certificate.Problem(description: "--key \(key) is a public certificate; give this peer's secret one (NAME.key, from drover keygen)")
        }
        let server = try Certificate.load(serverKey)
        return ClientSecurity(certificate: own, serverKey: server.publicKey)
    }

    /// Makes `socket` (before it connects) a CURVE client of the server.
    public func configure(_ socket: ZMQSocket) throws {
        guard let secret = certificate.secretKey.flatMap(z85DecodeKey), let publicKey = z85DecodeKey(certificate.publicKey),
              let server = z85DecodeKey(serverKey) else { return }
        try socket.set(.curveSecretKey(secret))
        try socket.set(.curvePublicKey(publicKey))
        try socket.set(.curveServerKey(server))
    }
}

extension ClientSecurity? {
    /// Configures `socket` when keys are given; a plaintext client otherwise.
    public func configure(_ socket: ZMQSocket) throws {
        if let self { try self.configure(socket) }
    }
}

/// What a failed handshake means, in words for the person running the client.
public enum HandshakeFailure {
    /// The explanation of a handshake event seen by a client of `server` ("the broker"), or
    /// nil for an event that is not a failure. `usesKeys`: this client presented keys.
    public static func describe(_ event: ZMQMonitorEvent, server: String, serverFlag: String, usesKeys: Bool) -> String? {
        switch event.kind {
        case .handshakeFailedAuth:
            return usesKeys
                ? "\(server) refused this key (it is not in its --authorized-keys, or was revoked)"
                : "\(server) refused this connection: without keys it admits loopback peers only (use --key and \(serverFlag), or start it with --insecure)"
        case .handshakeFailedProtocol:
            if event.isMechanismMismatch {
                return usesKeys
                    ? "\(server) does not use keys, and this client was given --key: drop --key and \(serverFlag), or give \(server) its keys"
                    : "\(server) requires keys: give this client --key (its secret certificate) and \(serverFlag) (\(server)'s public one)"
            }
            return "the handshake with \(server) failed on a protocol error (code \(String(event.value, radix: 16)))"
        case .handshakeFailedNoDetail:
            return usesKeys
                ? "\(server) closed the connection during the handshake: its key does not match \(serverFlag)"
                : "\(server) closed the connection during the handshake"
        default:
            return nil
        }
    }
}

/// A client's view of its handshakes with one server, from its socket monitor: refusals that
/// will not change by retrying end the wait at once, others are remembered for the message
/// when the wait times out.
public struct HandshakeWatch: Sendable {
    public let server: String
    public let serverFlag: String
    public let usesKeys: Bool
    /// The latest failure, in words.
    public private(set) var lastFailure: String?

    public init(server: String, serverFlag: String, usesKeys: Bool) {
        self.server = server
        self.serverFlag = serverFlag
        self.usesKeys = usesKeys
    }

    /// Notes `event`; returns its description when it is a refusal that retrying will not cure
    /// (the key refused, or one side uses keys and the other not).
    public mutating func note(_ event: ZMQMonitorEvent) -> String? {
        if event.kind == .handshakeSucceeded {
            lastFailure = nil
            return nil
        }
        guard let text = HandshakeFailure.describe(event, server: server, serverFlag: serverFlag, usesKeys: usesKeys) else { return nil }
        lastFailure = text
        return event.kind == .handshakeFailedAuth || event.isMechanismMismatch ? text : nil
    }
}

/// libzmq gives up on a connection whose handshake was refused for its key or its security
/// mechanism (it does not reconnect, as it does after a lost connection). A long-lived client
/// (a worker, the controller) redials after a pause instead, so that a key authorized later
/// (the server reads its keys again on SIGHUP) gets in without a restart.
public struct Redial: Sendable {
    public static let pauseMilliseconds: Int64 = 2000
    private var at: Int64?

    public init() {}

    /// Notes a monitor event of the client's socket.
    public mutating func note(_ event: ZMQMonitorEvent, now: Int64) {
        if event.kind == .handshakeFailedAuth || event.kind == .handshakeFailedProtocol { at = now + Self.pauseMilliseconds }
    }

    /// Connects `socket` to `endpoint` afresh once the pause after a refusal is over.
    public mutating func redialIfDue(_ socket: ZMQSocket, endpoint: String, now: Int64) {
        guard let due = at, now >= due else { return }
        at = nil
        try? socket.disconnect(endpoint)
        try? socket.connect(endpoint)
    }
}
