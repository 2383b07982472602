import Foundation
import Logging
import Synchronization
import ZeroMQ

/// How a broker or controller admits peers on the sockets it binds.
///
/// - With a key (`--key`, its secret certificate) and `--authorized-keys`: a CURVE server;
///   the ZAP handler admits only authorized keys, and every message carries the key and its
///   role (``role(ofUserID:)``).
/// - Without keys: plaintext, and the ZAP handler admits loopback peers only, unless
///   `--insecure` admits everyone.
public struct ServerSecurity: Sendable {
    public static let zapDomain = "drover"
    /// How long a connection may take to complete its handshake.
    public static let handshakeMilliseconds: Int32 = 5000

    public var certificate: Certificate?
    public var authorizedKeys: AuthorizedKeys?
    public var insecure: Bool
    /// Most connections open at once; past it new handshakes are refused, so a peer that
    /// opens thousands of connections cannot exhaust the server.
    public var maxConnections = 10_000

    public init(certificate: Certificate? = nil, authorizedKeys: AuthorizedKeys? = nil, insecure: Bool = false) {
        self.certificate = certificate
        self.authorizedKeys = authorizedKeys
        self.insecure = insecure
    }

    /// No keys, loopback only.
    public static var loopbackOnly: ServerSecurity { ServerSecurity() }

    /// Whether peers authenticate with keys (CURVE).
    public var usesKeys: Bool { certificate != nil }

    /// Makes `socket` (before it binds) a CURVE server with this key, or a plaintext socket
    /// whose handshakes the ZAP handler still sees (for the peer's address). Either way a
    /// missing ZAP handler refuses everyone.
    public func configure(_ socket: ZMQSocket) throws {
        if let certificate, let secret = certificate.secretKey.flatMap(z85DecodeKey) {
            try socket.set(.curveServer(true))
            try socket.set(.curveSecretKey(secret))
        }
        try socket.set(.zapDomain(Self.zapDomain))
        try socket.set(.zapEnforceDomain(true))
        try socket.set(.handshakeInterval(milliseconds: Self.handshakeMilliseconds))
    }

    /// Says at start who may connect; `anyone` says what an unauthenticated peer could do.
    public func logMode(_ logger: Logger, anyone: String) {
        if usesKeys {
            logger.info("secured with keys (CURVE): only authorized keys connect, each limited to its role",
                        metadata: ["authorized-keys": "\(authorizedKeys?.path ?? "")", "keys": "\(authorizedKeys?.count ?? 0)"])
        } else if insecure {
            logger.warning("INSECURE: no keys, and \(anyone) (--insecure)")
        } else {
            logger.notice("no keys: serving loopback peers only; to serve other hosts, give --key and --authorized-keys (see docs/SECURITY.md), or --insecure")
        }
    }

    /// The verdict on one handshake.
    public func decide(_ request: ZAPRequest) -> ZAPVerdict {
        if usesKeys {
            guard request.mechanism == "CURVE", let key = request.clientKey else {
                return .refuse("this server takes CURVE keys only")
            }
            guard let entry = authorizedKeys?.entry(forKey: key) else {
                return .refuse("unknown key \(key)")
            }
            return .admit(userID: key, properties: [("Role", entry.role.rawValue), ("Name", entry.name)])
        }
        if insecure || Self.isLoopback(request.address) { return .admit() }
        return .refuse("without keys this server admits loopback peers only; \(request.address) is not (use keys, or --insecure)")
    }

    /// The role of the key a message came with (its `User-Id`), or nil when that key is not
    /// authorized (any more: a key removed by a reload is refused on its open connections too).
    public func role(ofUserID userID: String?) -> Certificate.Role? {
        guard let userID, !userID.isEmpty else { return nil }
        return authorizedKeys?.entry(forKey: userID)?.role
    }

    /// Whether `address` (as ZAP gives it) is this host's loopback. An empty address is an ipc
    /// or inproc peer: local too.
    static func isLoopback(_ address: String) -> Bool {
        if address.isEmpty || address == "::1" || address.hasPrefix("127.") { return true }
        // An IPv4 peer on an IPv6 socket.
        return address.hasPrefix("::ffff:127.")
    }
}

/// Logs refused handshakes at most once per `interval` for each reason, with how many were
/// left out since: a flood of bad handshakes cannot flood the log.
public struct RateLimitedLog: Sendable {
    private struct Seen: Sendable {
        var lastLogged: Int64
        var suppressed: Int
    }

    private let interval: Int64
    private var seen: [String: Seen] = [:]

    public init(intervalMilliseconds: Int64 = 10_000) { interval = intervalMilliseconds }

    /// Whether to log an event about `key` now, and how many about it were left out since
    /// the last line.
    public mutating func admit(_ key: String, now: Int64) -> (log: Bool, suppressed: Int) {
        if var entry = seen[key] {
            guard now - entry.lastLogged >= interval else {
                entry.suppressed += 1
                seen[key] = entry
                return (false, 0)
            }
            let suppressed = entry.suppressed
            seen[key] = Seen(lastLogged: now, suppressed: 0)
            return (true, suppressed)
        }
        if seen.count > 10_000 { seen.removeAll() }  // bounded, whatever the keys
        seen[key] = Seen(lastLogged: now, suppressed: 0)
        return (true, 0)
    }
}

/// A ``ServerSecurity``'s ZAP handler, logging each refusal (rate-limited, with the key or the
/// address).
public final class ServerGuard: Sendable {
    public let security: ServerSecurity
    private let handler: ZAPHandler
    private let refusals: Refusals

    private final class Refusals: Sendable {
        let state = Mutex((log: RateLimitedLog(), count: 0))
        /// Connections open now (``ServerWatch`` counts them from the socket's monitor).
        let connections = Atomic<Int>(0)
    }

    /// Starts the ZAP handler on `context`; call before binding the sockets it guards.
    public init(_ security: ServerSecurity, context: ZMQContext, logger: Logger) throws {
        self.security = security
        let refusals = Refusals()
        self.refusals = refusals
        handler = try ZAPHandler(context: context) { request in
            // The count may not include this connection yet (the socket's monitor is read on
            // the server's own thread): at the cap, no more.
            let open = refusals.connections.load(ordering: .relaxed)
            let verdict = open >= security.maxConnections
                ? .refuse("\(open) connections are open, the most this server takes is \(security.maxConnections)")
                : security.decide(request)
            guard !verdict.admitted else { return verdict }
            let subject = request.clientKey ?? request.address
            let (log, suppressed) = refusals.state.withLock { state in
                state.count += 1
                return state.log.admit(subject, now: monotonicMilliseconds())
            }
            if log {
                logger.warning("refused a connection", metadata: [
                    "peer": "\(request.address)", "key": "\(request.clientKey ?? "none (plaintext)")", "reason": "\(verdict.reason)",
                    "refused-since-last-line": "\(suppressed)"])
            }
            return verdict
        }
    }

    /// Handshakes refused so far.
    public var refusedHandshakes: Int { refusals.state.withLock { $0.count } }

    func connectionOpened() { refusals.connections.add(1, ordering: .relaxed) }
    func connectionClosed() { refusals.connections.subtract(1, ordering: .relaxed) }

    /// Stops the ZAP handler (before the context is terminated).
    public func stop() { handler.stop() }
}
