/// A size given on the command line: a number of bytes, or with a unit (`512MiB`, `2GiB`,
/// `100M`, `1G`: K, M, G and T are powers of 1024, with or without `iB` or `B`).
enum ByteSize {
    static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber }
        guard let value = Int(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).uppercased()
        let shift: Int
        switch unit {
        case "", "B": shift = 0
        case "K", "KB", "KIB": shift = 10
        case "M", "MB", "MIB": shift = 20
        case "G", "GB", "GIB": shift = 30
        case "T", "TB", "TIB": shift = 40
        default: return nil
        }
        let (result, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : result
    }
}

import Foundation
