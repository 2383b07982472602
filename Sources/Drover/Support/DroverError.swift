/// An error from a Drover role, worded for the person who ran the command: what went wrong and
/// what to do about it.
public struct DroverError: Error, Equatable, CustomStringConvertible, Sendable {
    private enum Code: Equatable, Sendable {
        case badOption
        case cannotBind
        case unreachable
        case lostContact
        case refused
        case cannotWrite
        case handlerUnavailable
        case notStarted
    }

    private let code: Code
    public let description: String

    public static func == (a: DroverError, b: DroverError) -> Bool { a.code == b.code }

    /// A flag or option value is unusable.
    public static func badOption(_ text: String) -> DroverError { .init(code: .badOption, description: text) }
    /// The endpoint could not be bound.
    public static func cannotBind(_ endpoint: String, _ why: String) -> DroverError {
        .init(code: .cannotBind, description: "cannot bind \(endpoint): \(why)")
    }
    /// No answer from a peer within the timeout.
    public static func unreachable(_ what: String, _ endpoint: String, seconds: Double, hint: String) -> DroverError {
        .init(code: .unreachable, description: "no answer from the \(what) at \(endpoint) within \(formatSeconds(seconds)); \(hint)")
    }
    /// A peer that answered earlier went silent.
    public static func lostContact(_ what: String, _ endpoint: String, _ detail: String) -> DroverError {
        .init(code: .lostContact, description: "lost contact with the \(what) at \(endpoint): \(detail)")
    }
    /// The peer answered with an error.
    public static func refused(_ text: String) -> DroverError { .init(code: .refused, description: text) }
    /// A file could not be written.
    public static func cannotWrite(_ path: String, _ why: String) -> DroverError {
        .init(code: .cannotWrite, description: "cannot write \(path): \(why)")
    }
    /// The handler cannot run (for example, an `--exec` command that does not exist).
    public static func handlerUnavailable(_ text: String) -> DroverError { .init(code: .handlerUnavailable, description: text) }

    /// An API was used out of order (for example, offering items before starting a run).
    public static func notStarted(_ text: String) -> DroverError { .init(code: .notStarted, description: text) }

    // Sentinels for comparisons in tests and callers.
    public static let anyUnreachable = DroverError(code: .unreachable, description: "")
}

func formatSeconds(_ s: Double) -> String {
    s == s.rounded() ? "\(Int(s)) s" : "\(s) s"
}
