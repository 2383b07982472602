import Foundation
import Testing
@testable import Drover

@Suite("LineSource: lines of a file or pipe as items")
struct LineSourceTests {
    /// Everything `source` gives until its end, as text (`!reason` for a refused line).
    func drain(_ source: inout LineSource) -> [String] {
        var out: [String] = []
        while true {
            switch source.next() {
            case .item(let bytes): out.append(String(decoding: bytes, as: UTF8.self))
            case .refused(let reason): out.append("!" + reason)
            case .notYet: continue  // a pipe whose writer has not finished
            case .end: return out
            }
        }
    }

    /// A pipe whose write end is fed by a thread with `chunks` (then closed); returns the read end.
    func pipe(feeding chunks: @escaping @Sendable (Int32) -> Void) -> Int32 {
        var fds: [Int32] = [-1, -1]
        precondition(Glibc.pipe(&fds) == 0)
        let writeEnd = fds[1]
        Thread.detachNewThread {
            chunks(writeEnd)
            close(writeEnd)
        }
        return fds[0]
    }

    @Test("lines become items without their line endings; empty lines are skipped; a last line without a newline counts")
    func plainLines() {
        let fd = pipe { writeAll($0, Array("one\r\n\ntwo\n\n\nthree".utf8)) }
        var source = LineSource(fileDescriptor: fd, closeWhenDone: true)
        #expect(drain(&source) == ["one", "two", "three"])
        #expect(source.lines == 6)
    }

    @Test("a line over the limit is refused by its line number as soon as it passes it; the next lines go on")
    func oversizeLine() {
        let fd = pipe { fd in
            writeAll(fd, Array("first\n\n".utf8))
            for _ in 0..<10 { writeAll(fd, Array(repeating: UInt8(ascii: "x"), count: 100_000)) }
            writeAll(fd, Array("\nlast\n".utf8))
        }
        var source = LineSource(fileDescriptor: fd, closeWhenDone: true)
        source.maxLineBytes = 100
        let items = drain(&source)
        #expect(items.count == 3)
        #expect(items.first == "first")
        #expect(items.last == "last")
        #expect(items[1].hasPrefix("!line 3 is over the broker's limit of 100 bytes ("), "\(items[1])")
    }

    @Test("a line of exactly the limit is an item, also with a \\r before its newline; one byte more is refused, wherever the reads split it",
          arguments: [1, 7, 101, 4096])
    func lineAtTheLimit(piece: Int) {
        let text = String(repeating: "a", count: 100) + "\r\n" + String(repeating: "c", count: 101) + "\n"
            + String(repeating: "d", count: 101) + "\r\n" + String(repeating: "b", count: 100)
        let fd = pipe { fd in
            // Written in pieces, so that a newline arrives sometimes with its line, sometimes after it.
            var rest = Array(text.utf8)[...]
            while !rest.isEmpty {
                writeAll(fd, Array(rest.prefix(piece)))
                rest = rest.dropFirst(piece)
            }
        }
        var source = LineSource(fileDescriptor: fd, closeWhenDone: true)
        source.maxLineBytes = 100
        let items = drain(&source)
        #expect(items.count == 4)
        #expect(items.first == String(repeating: "a", count: 100) && items.last == String(repeating: "b", count: 100))
        #expect(items[1].hasPrefix("!line 2 is over the broker's limit of 100 bytes"), "\(items[1])")
        #expect(items[2].hasPrefix("!line 3 is over the broker's limit of 100 bytes"), "\(items[2])")
    }

    @Test("an oversize last line without a newline is refused, and the source ends")
    func oversizeLastLine() {
        let fd = pipe { writeAll($0, Array(("ok\n" + String(repeating: "z", count: 5000)).utf8)) }
        var source = LineSource(fileDescriptor: fd, closeWhenDone: true)
        source.maxLineBytes = 100
        let items = drain(&source)
        #expect(items.count == 2 && items[0] == "ok")
        #expect(items[1].hasPrefix("!line 2 is over the broker's limit of 100 bytes"), "\(items[1])")
    }

    @Test("a 400 MB line is refused in about the time it takes to read it, holding no more than the limit",
          .timeLimit(.minutes(1)))
    func hugeLine() {
        // Searching the whole buffer again after every read made this quadratic: a 200 MB line
        // took over 30 s. Now each byte is looked at once (well under a second here).
        let block = [UInt8](repeating: UInt8(ascii: "y"), count: 1 << 20)
        let fd = pipe { fd in
            for _ in 0..<400 { writeAll(fd, block) }
            writeAll(fd, Array("\nnext\n".utf8))
        }
        var source = LineSource(fileDescriptor: fd, closeWhenDone: true)
        source.maxLineBytes = 1 << 20
        let items = drain(&source)
        #expect(items.count == 2)
        #expect(items.first?.hasPrefix("!line 1 is over the broker's limit of 1,048,576 bytes") == true)
        #expect(items.last == "next")
    }
}
