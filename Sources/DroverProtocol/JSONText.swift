import Foundation

/// `value` as compact JSON text with sorted keys: the body of status, exit-progress and
/// dead-letter replies (docs/PROTOCOL.md). Encoding these plain value types cannot fail;
/// `{}` stands in if one ever did.
public func jsonText<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
}
