/// The rule for queue names, shared by every role that takes one: non-empty, at most
/// ``Codec/maxNameBytes`` bytes of UTF-8, no spaces or control characters.
public enum QueueName {
    /// Why a queue name is unusable, or `nil` when it is fine.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "the queue name is empty; use --queue NAME" }
        if name.utf8.count > Codec.maxNameBytes { return "the queue name is longer than \(Codec.maxNameBytes) bytes" }
        // An ASCII name (nearly every one) is checked byte by byte: looking up each character's
        // Unicode category showed in a broker receiving items one by one.
        let unusable = name.utf8.allSatisfy { $0 < 0x80 }
            ? name.utf8.contains { $0 <= 0x20 || $0 == 0x7F }
            : name.unicodeScalars.contains { $0.properties.generalCategory == .control || $0 == " " }
        return unusable ? "the queue name \"\(name)\" contains spaces or control characters" : nil
    }
}
