import Foundation
import Logging

/// A swift-log handler that writes one line per event to stderr: readable text by default,
/// or one JSON object per line for log collectors.
public struct DroverLogHandler: LogHandler {
    /// The two line formats.
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: Format

    public init(label: String, format: Format, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let timestamp = Self.timestamp()
        var line: String
        switch format {
        case .text:
            line = "\(timestamp) \(event.level.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(label): \(event.message)"
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                let text = "\(value)"
                line += text.contains(" ") ? " \(key)=\"\(text)\"" : " \(key)=\(text)"
            }
        case .json:
            var object: [String: String] = ["ts": timestamp, "level": event.level.rawValue, "role": label, "msg": "\(event.message)"]
            for (key, value) in fields { object[key] = "\(value)" }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        }
        writeAll(STDERR_FILENO, Array((line + "\n").utf8))
    }

    private static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var seconds = ts.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, Int(ts.tv_nsec / 1_000_000))
    }
}
