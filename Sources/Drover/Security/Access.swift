import DroverProtocol

/// What each role may ask of the broker and of the controller. The role comes from the key
/// that authenticated the connection (the ZAP handler's verdict, checked on every message),
/// never from what a peer says in its `hello`.
///
/// | role | broker | controller |
/// | --- | --- | --- |
/// | producer | `hello` as a producer, `submit` (its results come back to it alone), status | status |
/// | worker | `hello` as a worker, `heartbeat`, `credit`, `done`, `hand-back`, `handler-state`, `bye`, status | status; its `fleet` |
/// | admin | as a producer, and the dead-letter store (list, show, replay, purge) | `exit`, status |
/// | controller | `hello` as a controller, `fleet`, `bye`, status | — |
/// | broker | status | status |
public enum Access {
    /// Why `role` may not send `message` to the broker, or nil when it may.
    public static func brokerRefusal(_ role: Certificate.Role, _ message: DroverMessage) -> String? {
        let allowed: Bool
        switch message {
        case .statusRequest:
            allowed = true
        case .hello(let hello):
            switch hello.role {
            case .producer: allowed = role == .producer || role == .admin
            case .worker: allowed = role == .worker
            case .controller: allowed = role == .controller
            }
            if !allowed { return "a \(role.rawValue) key may not say hello as a \(hello.role)" }
        case .submit:
            allowed = role == .producer || role == .admin
        case .heartbeat, .credit, .done, .handBack, .handlerState:
            allowed = role == .worker
        case .bye:
            allowed = role == .worker || role == .controller
        case .fleet:
            allowed = role == .controller
        case .deadLetters:
            allowed = role == .admin
        case .welcome, .error, .accepted, .rejected, .result, .deliver, .statusReply, .exitRequest, .exitProgress,
             .exitFinished, .deadLetterReply:
            allowed = true  // refused as a command the broker does not accept at all
        }
        return allowed ? nil : "a \(role.rawValue) key may not send \(message.command)"
    }

    /// Why `role` may not send `message` to the controller's command socket, or nil.
    public static func controllerRefusal(_ role: Certificate.Role, _ message: DroverMessage) -> String? {
        switch message {
        case .exitRequest: role == .admin ? nil : "only an admin key may make the fleet exit; this is a \(role.rawValue) key"
        default: nil
        }
    }
}
