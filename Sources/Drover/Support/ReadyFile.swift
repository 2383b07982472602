import Foundation

/// Writes `lines` to `path` atomically (a temporary file, then rename), so a reader never sees half.
public func writeReadyFile(_ path: String, lines: [String]) throws {
    let temporary = path + ".tmp"
    try (lines.joined(separator: "\n") + "\n").write(toFile: temporary, atomically: false, encoding: .utf8)
    guard rename(temporary, path) == 0 else { throw DroverError.cannotWrite(path, String(cString: strerror(errno))) }
}
