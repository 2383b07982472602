import Foundation

/// The lines of a file or of stdin as items, without their line endings; empty lines are
/// skipped (they are not items). It never blocks: when no whole line is ready it says
/// ``NextItem/notYet``, so `drover send` sends what it has at once and a line typed or piped
/// slowly (`tail -f log | drover send …`) goes out as soon as it arrives.
///
/// A line longer than ``maxLineBytes`` is refused as soon as it passes the limit, by its line
/// number, and the rest of it is read and dropped, so a huge line costs what reading it costs
/// and no more memory than the limit. Each byte is searched for a newline once.
public struct LineSource: ItemSource {
    private let fd: Int32
    private let closeWhenDone: Bool
    private var buffer: [UInt8] = []
    /// Where `read` puts bytes before they join `buffer`.
    private var scratch = [UInt8](repeating: 0, count: LineSource.chunk)
    /// Where the current line starts in `buffer`.
    private var start = 0
    /// Bytes of the current line before this index hold no newline: only later bytes are searched.
    private var scanned = 0
    private var ended = false
    private var closed = false
    /// Lines read so far, empty ones included (the current line is number `lines + 1`).
    private(set) var lines = 0
    /// Set while the rest of a refused line is being read and dropped.
    private var skipping = false
    /// The longest line taken as an item, in bytes (a `\r` before the newline is not counted).
    /// Default: no limit. `drover send` sets it to the broker's maximum item size.
    public var maxLineBytes = Int.max

    /// Most bytes read per `read` call.
    static let chunk = 64 * 1024

    /// Reads stdin.
    public init() {
        fd = STDIN_FILENO
        closeWhenDone = false
    }

    /// Reads `fd`, closing it at the end when `closeWhenDone`.
    public init(fileDescriptor: Int32, closeWhenDone: Bool) {
        fd = fileDescriptor
        self.closeWhenDone = closeWhenDone
    }

    /// Opens `path`, or throws an error saying why it cannot be read.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DroverError.badOption("--file \(path): \(String(cString: strerror(errno)))") }
        self.init(fileDescriptor: fd, closeWhenDone: true)
    }

    public var fileDescriptor: Int32? { ended ? nil : fd }

    public mutating func next() -> NextItem {
        while true {
            if let newline = Self.newline(in: buffer, from: scanned) {
                let line = buffer[start..<newline]
                lines += 1
                start = newline + 1
                scanned = start
                if start > Self.chunk {
                    buffer.removeFirst(start)
                    start = 0
                    scanned = 0
                }
                if skipping {
                    skipping = false
                    continue
                }
                if let next = given(line) { return next }
                continue
            }
            scanned = buffer.count
            if skipping {
                discardBuffer()
            } else if buffer.count - start - 1 > maxLineBytes {
                // Over the limit even if its last byte is the `\r` of a `\r\n`.
                let soFar = buffer.count - start
                discardBuffer()
                skipping = true
                return .refused(tooLong(lines + 1, read: soFar) + "; the rest of the line was skipped")
            }
            if ended {
                let rest = skipping ? [] : buffer[start...]
                skipping = false
                discardBuffer()
                if !rest.isEmpty {
                    lines += 1
                    if let next = given(rest) { return next }
                }
                // Closed only now, not at end of file: until `.end` the producer may still poll
                // the descriptor, and a closed one polls ready at once (or, reused, as another).
                if closeWhenDone && !closed {
                    closed = true
                    close(fd)
                }
                return .end
            }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 0) > 0 else { return .notYet }
            let n = scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress!, Self.chunk) }
            if n > 0 { buffer.append(contentsOf: scratch[0..<n]) }
            if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) { ended = true }
        }
    }

    /// Line number `lines` as an item, refused when over the limit; `nil` for an empty line.
    private func given(_ line: ArraySlice<UInt8>) -> NextItem? {
        guard let item = Self.item(line) else { return nil }
        return item.count > maxLineBytes ? .refused(tooLong(lines, read: item.count)) : .item(item)
    }

    private mutating func discardBuffer() {
        buffer.removeAll(keepingCapacity: true)
        start = 0
        scanned = 0
    }

    private func tooLong(_ line: Int, read: Int) -> String {
        "line \(line) is over the broker's limit of \(groupedDigits(maxLineBytes)) bytes (\(groupedDigits(read)) read)"
    }

    /// The index of the first newline in `bytes` at or after `start`.
    private static func newline(in bytes: [UInt8], from start: Int) -> Int? {
        bytes.withUnsafeBufferPointer { all in
            guard start < all.count, let found = memchr(all.baseAddress! + start, 0x0A, all.count - start) else { return nil }
            return all.baseAddress!.distance(to: found.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// A line without its trailing `\r`s and `\n`s, or `nil` when nothing is left.
    private static func item(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        var end = bytes.endIndex
        while end > bytes.startIndex, bytes[end - 1] == 0x0D || bytes[end - 1] == 0x0A { end -= 1 }
        return end == bytes.startIndex ? nil : Array(bytes[bytes.startIndex..<end])
    }
}
