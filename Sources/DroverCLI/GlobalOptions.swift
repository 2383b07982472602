import ArgumentParser
import Drover
import Foundation
import Logging

/// Flags every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log line format: text (one readable line per event) or json (one object per line).")
    var logFormat: DroverLogHandler.Format = .text

    /// Sets up swift-log for this process and returns a logger labelled with the role.
    func makeLogger(role: String) -> Logger {
        let format = logFormat, level = logLevel
        LoggingSystem.bootstrap { label in DroverLogHandler(label: label, format: format, level: level) }
        return Logger(label: role)
    }

    /// The flags to pass on to child processes (`drover up`).
    var childArguments: [String] { ["--log-level", logLevel.rawValue, "--log-format", logFormat.rawValue] }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension DroverLogHandler.Format: ExpressibleByArgument {}

/// Rejects a malformed endpoint before any socket is made.
func validateEndpoint(_ endpoint: String, flag: String, binding: Bool) throws {
    if let problem = Endpoint.problem(endpoint, binding: binding) {
        throw ValidationError("\(flag): \(problem)")
    }
}

/// `--item-timeout SECONDS` (worker and send) in milliseconds, or a clear error.
func itemTimeoutMilliseconds(_ seconds: Double?) throws -> UInt32? {
    guard let seconds else { return nil }
    guard seconds > 0 && seconds <= 2_000_000 else {
        throw ValidationError("--item-timeout must be a number of seconds above 0 (at most 2,000,000); got \(seconds)")
    }
    return UInt32(max(1, seconds * 1000))
}

/// A failure of the command itself (not of its flags), printed as `Error: …` with exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes a line (or raw bytes) to stdout unbuffered, so output from a long run appears as it happens.
func writeOutput(_ text: String) { writeAll(STDOUT_FILENO, Array((text + "\n").utf8)) }
func writeOutput(_ bytes: [UInt8]) { writeAll(STDOUT_FILENO, bytes) }
/// Writes `text` to stderr as given (no newline added).
func writeError(_ text: String) { writeAll(STDERR_FILENO, Array(text.utf8)) }

