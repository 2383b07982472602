import DroverDispatch
import DroverProtocol
import Foundation
import Logging
import ZeroMQ

/// The client side of `drover exit` and `drover status`: one request, then the answers.
///
/// Not `Sendable`: it owns a socket and stays on the thread that made it.
public final class ControlClient {
    private let socket: ZMQSocket
    private let endpoint: String
    private let role: String
    private let timeoutSeconds: Double
    /// Handshake outcomes: a refused key or a wrong server key is said as such.
    private let monitor: ZMQSocket
    private var handshakes: HandshakeWatch

    /// Connects to `endpoint`, the controller's command endpoint or the broker (named by `role`
    /// in messages). `timeoutSeconds` bounds the wait for the first answer. `security`: keys
    /// for a server that uses them.
    public init(endpoint: String, role: String, timeoutSeconds: Double, context: ZMQContext, security: ClientSecurity? = nil) throws {
        if let problem = Endpoint.problem(endpoint, binding: false) { throw DroverError.badOption(problem) }
        self.endpoint = endpoint
        self.role = role
        self.timeoutSeconds = timeoutSeconds
        socket = try ZMQSocket(context, type: .dealer, linger: 500)
        monitor = try socket.monitor(.handshakes)
        handshakes = HandshakeWatch(server: "the \(role)", serverFlag: "--\(role)-key", usesKeys: security != nil)
        try security.configure(socket)
        try socket.set(.immediate(true))
        try socket.set(.maxMessageSize(bytes: 16 << 20))
        try socket.connect(endpoint)
    }

    deinit {
        socket.stopMonitor()
        monitor.close()
    }

    /// Throws at once for a handshake refusal that retrying will not cure.
    private func checkHandshakes() throws {
        while let event = try monitor.receiveMonitorEvent(dontWait: true) {
            if let refusal = handshakes.note(event) { throw DroverError.refused("\(refusal) (\(endpoint))") }
        }
    }

    /// No answer within `seconds`: says why, when a handshake failure explains it.
    private func unreachable(seconds: Double, hint: String) -> DroverError {
        if let failure = handshakes.lastFailure {
            return .refused("no answer from the \(role) at \(endpoint) within \(formatSeconds(seconds)): \(failure)")
        }
        return .unreachable(role, endpoint, seconds: seconds, hint: hint)
    }

    /// Sends `message` once the connection is up, or throws ``DroverError/anyUnreachable``.
    private func sendWhenConnected(_ message: DroverMessage, hint: String) throws {
        let limit = monotonicMilliseconds() + Int64(timeoutSeconds * 1000)
        // With ZMQ_IMMEDIATE a send fails with EAGAIN until the connection (its handshake
        // included) is made.
        while !(try socket.send(Codec.encode(message), dontWait: true)) {
            try checkHandshakes()
            guard monotonicMilliseconds() < limit else { throw unreachable(seconds: timeoutSeconds, hint: hint) }
            usleep(20_000)
        }
    }

    /// Waits up to `milliseconds` for the next message.
    private func next(within milliseconds: Int64, hint: String) throws -> DroverMessage {
        var poller = ZMQPoller()
        _ = poller.add(socket)
        let limit = monotonicMilliseconds() + milliseconds
        while true {
            let left = limit - monotonicMilliseconds()
            guard left > 0 else { throw unreachable(seconds: Double(milliseconds) / 1000, hint: hint) }
            try checkHandshakes()
            if try poller.poll(timeout: Int(min(left, 100)))[0], let frames = try socket.receive(dontWait: true) {
                do {
                    return try Codec.decode(frames)
                } catch {
                    throw DroverError.refused("the \(role) at \(endpoint) sent a message this drover cannot read: \(error.detail)")
                }
            }
        }
    }

    /// Asks for the broker's status (from the broker itself or through the controller).
    public func status() throws -> BrokerStatus {
        let hint = "is `drover \(role)` running there?"
        try sendWhenConnected(.statusRequest, hint: hint)
        while true {
            switch try next(within: Int64(timeoutSeconds * 1000), hint: hint) {
            case .statusReply(let text):
                guard let status = try? JSONDecoder().decode(BrokerStatus.self, from: Data(text.utf8)) else {
                    throw DroverError.refused("the \(role) has no broker status yet (is the broker reachable from it?)")
                }
                return status
            case .error(_, let text):
                throw DroverError.refused("the \(role) refused: \(text)")
            default:
                continue
            }
        }
    }

    /// Sends a dead-letter request to the broker and returns its JSON answer.
    public func deadLetters(_ request: DeadLetterRequest) throws -> String {
        let hint = "is `drover broker` running there?"
        try sendWhenConnected(.deadLetters(request), hint: hint)
        while true {
            switch try next(within: Int64(timeoutSeconds * 1000), hint: hint) {
            case .deadLetterReply(let json): return json
            case .error(_, let text): throw DroverError.refused("the \(role) refused: \(text)")
            default: continue
            }
        }
    }

    /// Asks the controller to shut the fleet down, calls `onEvent` with each progress event
    /// (JSON fields) and returns the final report. With `wait` false, returns once the
    /// controller has published the exit.
    public func exit(deadlineMilliseconds: UInt32, wait: Bool,
                     onEvent: ([String: String]) -> Void) throws -> (succeeded: Bool, report: [String: String]) {
        let hint = "is `drover controller` running there, with --bind on that port?"
        try sendWhenConnected(.exitRequest(deadlineMilliseconds: deadlineMilliseconds), hint: hint)
        while true {
            // The controller answers at once and then at least every heartbeat until it reports
            // the end, so silence for the timeout means it has gone.
            let message = try next(within: Int64(timeoutSeconds * 1000), hint: hint)
            switch message {
            case .exitProgress(let text):
                let event = decodeFields(text)
                if event["event"] == "waiting" { continue }
                onEvent(event)
                if !wait && event["event"] == "exit-published" { return (true, event) }
            case .exitFinished(let ok, let text):
                return (ok, decodeFields(text))
            case .error(_, let text):
                throw DroverError.refused("the controller refused the exit: \(text)")
            default:
                continue
            }
        }
    }

    private func decodeFields(_ text: String) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))) ?? ["raw": text]
    }
}
