/// Small text helpers for messages people read.
/// `n` with thousands separated by commas (`3,000,000`), whatever the locale: for messages.
public func groupedDigits(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return n < 0 ? "-" + out : out
}

/// At most `maxBytes` of `bytes`, cut back to the start of a UTF-8 character if the cut
/// would split one, so that error text never ends in a replacement character.
func utf8Prefix<C: Collection>(_ bytes: C, maxBytes: Int) -> [UInt8] where C.Element == UInt8 {
    var cut = Array(bytes.prefix(maxBytes))
    guard cut.count < bytes.count else { return cut }
    // Walk back over continuation bytes (10xxxxxx) to the lead byte of the last character; drop
    // that character if it is incomplete.
    var lead = cut.count - 1
    while lead > 0 && cut[lead] & 0xC0 == 0x80 { lead -= 1 }
    guard lead >= 0, lead < cut.count, cut[lead] & 0x80 != 0 else { return cut }
    let length = cut[lead] >= 0xF0 ? 4 : cut[lead] >= 0xE0 ? 3 : cut[lead] >= 0xC0 ? 2 : 1
    if cut.count - lead < length { cut.removeSubrange(lead...) }
    return cut
}
