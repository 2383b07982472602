#if canImport(Glibc)
import Glibc
#endif
import Logging
import ZeroMQ

/// A bound socket's connections as its monitor reports them, on the socket's own thread.
///
/// Handshakes that fail before the ZAP handler is asked (a plaintext peer meeting a CURVE
/// server, a peer that does not have this server's public key) are logged, rate-limited, with
/// the peer's address; open connections are counted for ``ServerGuard``'s connection cap.
public struct ServerWatch {
    public static let events: ZMQMonitorEvent.Kinds = [.accepted, .disconnected, .handshakeFailedProtocol]

    private let logger: Logger
    private let serverGuard: ServerGuard
    /// Peer addresses by connection (file descriptor), read when the connection was accepted.
    private var peers: [UInt32: String] = [:]
    private var refusals = RateLimitedLog()
    /// Why the latest handshake failed, until its connection's end is seen.
    private var failure: String?
    /// Handshakes that failed before authentication.
    public private(set) var failedHandshakes = 0

    public init(guarding serverGuard: ServerGuard, logger: Logger) {
        self.serverGuard = serverGuard
        self.logger = logger
    }

    /// Reads every waiting event from `monitor`.
    public mutating func drain(_ monitor: ZMQSocket, now: Int64) throws {
        while let event = try monitor.receiveMonitorEvent(dontWait: true) { note(event, now: now) }
    }

    mutating func note(_ event: ZMQMonitorEvent, now: Int64) {
        switch event.kind {
        case .accepted:
            // Read now, while the connection is likely still open; "" when it has gone already.
            peers[event.value] = Self.peerAddress(Int32(bitPattern: event.value)) ?? ""
            serverGuard.connectionOpened()
        case .disconnected:
            guard let peer = peers.removeValue(forKey: event.value) else { return }
            serverGuard.connectionClosed()
            // A failed handshake is followed by its connection's end, which names the peer.
            if let reason = failure {
                failure = nil
                let (log, suppressed) = refusals.admit(reason + peer, now: now)
                if log {
                    var metadata: Logger.Metadata = ["reason": "\(reason)", "refused-since-last-line": "\(suppressed)"]
                    if !peer.isEmpty { metadata["peer"] = "\(peer)" }
                    logger.warning("refused a connection", metadata: metadata)
                }
            }
        case .handshakeFailedProtocol:
            failedHandshakes += 1
            failure = if event.isMechanismMismatch {
                serverGuard.security.usesKeys ? "a plaintext peer (no keys) tried to connect; this server takes CURVE keys only"
                                              : "a peer with keys tried to connect; this server uses none (give it --key and --authorized-keys)"
            } else if event.isCryptographicFailure {
                "a peer that does not have this server's public key tried to connect (its --broker-key or --controller-key is another key)"
            } else {
                "a handshake failed (code \(String(event.value, radix: 16)))"
            }
        default:
            break
        }
    }

    /// The address of the peer on socket `fd`, or nil.
    static func peerAddress(_ fd: Int32) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
            }
        }
        return named == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}
