import Foundation
import Synchronization

/// `--echo`: the result is the item, and the item is printed on stdout, one line per item.
public final class EchoHandler: WorkHandler {
    private let print: Bool
    private let output = Mutex(())

    public init(print: Bool = true) {
        self.print = print
    }

    public func handle(_ item: WorkItem) throws -> [UInt8] {
        let result = Array(item.payload)
        if print {
            var line = result
            if line.last != UInt8(ascii: "\n") { line.append(UInt8(ascii: "\n")) }
            // One line per write, under a lock, so lines from several threads never interleave.
            output.withLock { _ in writeAll(STDOUT_FILENO, line) }
        }
        return result
    }
}
