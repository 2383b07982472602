import Foundation

/// The lines of a file or of stdin as bytes, read lazily (so `drover send` can stream a large
/// input), without their line endings. Empty lines are skipped: they are not items.
struct LineReader: Sequence, IteratorProtocol {
    private let file: UnsafeMutablePointer<FILE>
    private let closeWhenDone: Bool
    private var buffer: UnsafeMutablePointer<CChar>? = nil
    private var capacity = 0

    /// Reads stdin.
    init() {
        file = fdopen(dup(STDIN_FILENO), "r")!
        closeWhenDone = true
    }

    /// Opens `path`, or throws a message saying why it cannot be read.
    init(path: String) throws {
        guard let file = fopen(path, "r") else {
            throw CommandFailure("--file \(path): \(String(cString: strerror(errno)))")
        }
        self.file = file
        closeWhenDone = true
    }

    mutating func next() -> [UInt8]? {
        while true {
            let n = getline(&buffer, &capacity, file)
            guard n >= 0 else {
                if closeWhenDone { fclose(file) }
                free(buffer)
                buffer = nil
                return nil
            }
            var count = n
            while count > 0, buffer![count - 1] == 0x0A || buffer![count - 1] == 0x0D { count -= 1 }
            if count == 0 { continue }
            return buffer!.withMemoryRebound(to: UInt8.self, capacity: count) { Array(UnsafeBufferPointer(start: $0, count: count)) }
        }
    }
}
