import DroverProtocol
import Logging

/// Counts messages that failed to decode and logs them without flooding the log: the first
/// ten, then every thousandth. Every role that receives uses one, so a peer speaking another
/// protocol version, or garbage, is visible rather than silently ignored.
struct MalformedMessages {
    private(set) var count = 0

    /// Decodes `frames`, or counts and logs why it could not, naming `source`.
    mutating func decode(_ frames: [[UInt8]], from source: @autoclosure () -> String, logger: Logger) -> DroverMessage? {
        decode(frames[...], from: source(), logger: logger)
    }

    /// Decodes the frames after a ROUTER's routing id (or a whole message, as a slice).
    mutating func decode(_ frames: ArraySlice<[UInt8]>, from source: @autoclosure () -> String, logger: Logger) -> DroverMessage? {
        try? decodeOrError(frames, from: source(), logger: logger).get()
    }

    /// As ``decode(_:from:logger:)-(ArraySlice<[UInt8]>,_,_)``, with the reason it could not, for a
    /// server to answer with (`error` with its wire code: 1 for another version, else 2).
    mutating func decodeOrError(_ frames: ArraySlice<[UInt8]>, from source: @autoclosure () -> String,
                                logger: Logger) -> Result<DroverMessage, ProtocolError> {
        do {
            return .success(try Codec.decode(frames))
        } catch {
            record(error, from: source(), logger: logger)
            return .failure(error)
        }
    }

    /// Counts one malformed message and logs it if it is among the first ten or a thousandth.
    mutating func record(_ error: ProtocolError, from source: String, logger: Logger) {
        count += 1
        if count <= 10 || count % 1000 == 0 {
            logger.warning("dropped a malformed message", metadata: [
                "from": "\(source)", "reason": "\(error.detail)", "malformed-total": "\(count)"])
        }
    }
}
