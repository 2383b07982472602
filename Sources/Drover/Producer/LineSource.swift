import Drover
import Foundation

/// The lines of a file or of stdin as items, without their line endings; empty lines are
/// skipped (they are not items). It never blocks: when no whole line is ready it says
/// `notYet`, so `drover send` sends what it has at once and a line typed or piped slowly
/// (`tail -f log | drover send …`) goes out as soon as it arrives.
struct LineSource: ItemSource {
    private let fd: Int32
    private let closeWhenDone: Bool
    private var buffer: [UInt8] = []
    private var start = 0
    private var ended = false

    /// Most bytes read per `read` call.
    static let chunk = 64 * 1024

    /// Reads stdin.
    init() {
        fd = STDIN_FILENO
        closeWhenDone = false
    }

    /// Opens `path`, or throws a message saying why it cannot be read.
    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CommandFailure("--file \(path): \(String(cString: strerror(errno)))") }
        self.fd = fd
        closeWhenDone = true
    }

    var fileDescriptor: Int32? { ended ? nil : fd }

    mutating func next() -> NextItem {
        while true {
            if let newline = buffer[start...].firstIndex(of: 0x0A) {
                let line = trimmed(buffer[start..<newline])
                start = newline + 1
                if start > Self.chunk { buffer.removeFirst(start); start = 0 }
                if line.isEmpty { continue }
                return .item(line)
            }
            if ended {
                let rest = trimmed(buffer[start...])
                buffer.removeAll()
                start = 0
                return rest.isEmpty ? .end : .item(rest)
            }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 0) > 0 else { return .notYet }
            let before = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: Self.chunk))
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + before, Self.chunk) }
            buffer.removeLast(Self.chunk - max(n, 0))
            if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) {
                ended = true
                if closeWhenDone { close(fd) }
            }
        }
    }

    private func trimmed(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var end = bytes.endIndex
        while end > bytes.startIndex, bytes[end - 1] == 0x0D || bytes[end - 1] == 0x0A { end -= 1 }
        return Array(bytes[bytes.startIndex..<end])
    }
}
