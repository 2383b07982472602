/// Every message of wire protocol v2. `docs/PROTOCOL.md` gives each one's frames.
public enum DroverMessage: Sendable, Equatable {
    // Any peer → broker, and the broker's answer.
    case hello(Hello)
    case welcome(Welcome)
    case heartbeat
    case error(ErrorCode, String)

    // Producer ↔ broker.
    case submit(Submit)
    case accepted([ItemID])
    case rejected(Rejection)
    case result([ItemOutcome])

    // Worker ↔ broker.
    case credit(UInt32)
    case deliver([Delivery])
    case done(credit: UInt32, [ItemOutcome])
    case handBack([DeliveryRef])
    case bye(ByeCode, String)
    case handlerState(HandlerHealth)

    // Fleet state: controller → broker, broker → workers, controller PUB → workers.
    case fleet(FleetState)

    // Status: anyone → broker (JSON reply), and `drover exit` ↔ controller.
    case statusRequest
    case statusReply(String)
    case exitRequest(deadlineMilliseconds: UInt32)
    case exitProgress(String)
    case exitFinished(succeeded: Bool, String)

    // The dead-letter store: any client → broker, answered with JSON.
    case deadLetters(DeadLetterRequest)
    case deadLetterReply(String)

    /// The one-byte command code in the second frame.
    public enum Command: UInt8, Sendable {
        case hello = 0x01
        case welcome = 0x02
        case heartbeat = 0x03
        case error = 0x04
        case submit = 0x10
        case accepted = 0x11
        case rejected = 0x12
        case result = 0x13
        case credit = 0x20
        case deliver = 0x21
        case done = 0x22
        case handBack = 0x23
        case bye = 0x24
        case handlerState = 0x25
        case fleet = 0x30
        case statusRequest = 0x40
        case statusReply = 0x41
        case exitRequest = 0x42
        case exitProgress = 0x43
        case exitFinished = 0x44
        case deadLetters = 0x50
        case deadLetterReply = 0x51
    }

    /// This message's command code.
    public var command: Command {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .heartbeat: .heartbeat
        case .error: .error
        case .submit: .submit
        case .accepted: .accepted
        case .rejected: .rejected
        case .result: .result
        case .credit: .credit
        case .deliver: .deliver
        case .done: .done
        case .handBack: .handBack
        case .bye: .bye
        case .handlerState: .handlerState
        case .fleet: .fleet
        case .statusRequest: .statusRequest
        case .statusReply: .statusReply
        case .exitRequest: .exitRequest
        case .exitProgress: .exitProgress
        case .exitFinished: .exitFinished
        case .deadLetters: .deadLetters
        case .deadLetterReply: .deadLetterReply
        }
    }
}

/// What `drover dlq` asks of the broker's dead-letter store.
public enum DeadLetterRequest: Sendable, Equatable {
    /// The first `limit` dead items, oldest first (0: all).
    case list(limit: UInt32)
    /// One dead item with its payload.
    case show(ItemID)
    /// Put these dead items (all of them when empty) back on their queues with a fresh delivery cap.
    case replay([ItemID])
    /// Delete these dead items (all of them when empty).
    case purge([ItemID])

    /// The request-kind byte, the first argument frame.
    public enum Kind: UInt8, Sendable {
        case list = 1, show = 2, replay = 3, purge = 4
    }
}

/// Why a list of frames is not a valid Drover message.
public struct ProtocolError: Error, Equatable, CustomStringConvertible, Sendable {
    private enum Code: Equatable, Sendable {
        case notDrover
        case unsupportedVersion
        case unknownCommand
        case frameCount
        case frameSize
        case badValue
    }

    private let code: Code
    /// What was wrong, in words a person can act on.
    public let detail: String

    public static func notDrover(_ detail: String) -> ProtocolError { .init(code: .notDrover, detail: detail) }
    public static func unsupportedVersion(_ version: UInt8) -> ProtocolError {
        .init(code: .unsupportedVersion, detail: "protocol version \(version) is not supported; this peer speaks version \(ProtocolVersion.current)")
    }
    public static func unknownCommand(_ byte: UInt8) -> ProtocolError {
        .init(code: .unknownCommand, detail: "unknown command 0x\(String(byte, radix: 16))")
    }
    public static func frameCount(_ detail: String) -> ProtocolError { .init(code: .frameCount, detail: detail) }
    public static func frameSize(_ detail: String) -> ProtocolError { .init(code: .frameSize, detail: detail) }
    public static func badValue(_ detail: String) -> ProtocolError { .init(code: .badValue, detail: detail) }

    /// Sentinels for comparisons (`error == .anyUnsupportedVersion`).
    public static let anyUnsupportedVersion = ProtocolError(code: .unsupportedVersion, detail: "")
    public static let anyNotDrover = ProtocolError(code: .notDrover, detail: "")
    public static let anyUnknownCommand = ProtocolError(code: .unknownCommand, detail: "")
    public static let anyFrameCount = ProtocolError(code: .frameCount, detail: "")
    public static let anyFrameSize = ProtocolError(code: .frameSize, detail: "")
    public static let anyBadValue = ProtocolError(code: .badValue, detail: "")

    public static func == (a: ProtocolError, b: ProtocolError) -> Bool { a.code == b.code }

    /// The error code to answer the sender with.
    public var wireCode: ErrorCode { code == .unsupportedVersion ? .unsupportedVersion : .malformed }

    public var description: String { detail }
}
