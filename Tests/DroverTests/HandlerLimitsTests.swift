import DroverProtocol
import Testing
@testable import Drover

@Suite("Handlers: large items and results")
struct HandlerLimitsTests {
    func item(_ payload: [UInt8], limit: Int = Int.max) -> WorkItem {
        WorkItem(id: ItemID(high: 1, low: 2), attempt: 1, queue: "q", payload: payload[...], worker: "w", maxResultBytes: limit)
    }

    @Test("a result over the broker's limit fails its item with a message naming both sizes")
    func oversizeResult() {
        let handler = ClosureHandler { _ in [UInt8](repeating: 0, count: 3_000_000) }
        let outcome = Worker.run(handler, item([1], limit: 1_048_576))
        #expect(outcome.status == .failed)
        #expect(String(decoding: outcome.payload, as: UTF8.self)
                == "result of 3,000,000 bytes is over the broker's limit of 1,048,576 (broker --max-item-size)")
        #expect(Worker.run(handler, item([1], limit: 3_000_000)).status == .succeeded)
    }

    @Test("a handler's error text is cut to a bounded size")
    func longError() {
        let handler = ClosureHandler { _ in throw HandlerFailure(String(repeating: "e", count: 1_000_000)) }
        let outcome = Worker.run(handler, item([1], limit: 1_048_576))
        #expect(outcome.status == .failed)
        #expect(outcome.payload.count <= Worker.maxErrorBytes + 4)
    }

    /// Items of a few MiB through commands that read and write at their own pace. A blocking
    /// write of 64 KiB after POLLOUT (room for one page) hung for good on `od -v` with 500 KB.
    @Test("--exec moves items of several MiB through od, cat, and a command that writes before it reads",
          .timeLimit(.minutes(1)),
          arguments: [("od -v -An -tx1", 3 << 20), ("cat", 4 << 20), ("head -c 2000000 /dev/zero; cat", 3 << 20)])
    func largeItems(command: String, size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let result = try ExecHandler(command: command).handle(item(payload))
        switch command {
        case "cat": #expect(result == payload)
        case "od -v -An -tx1": #expect(result.count == size * 3 + size / 16, "3 characters per byte and a newline per 16")
        default: #expect(result.count == 2_000_000 + size)
        }
    }

    @Test("--exec stops a command whose output passes the result limit, and fails the item", .timeLimit(.minutes(1)))
    func floodingCommand() throws {
        #expect {
            _ = try ExecHandler(command: "yes").handle(item(Array("x".utf8), limit: 100_000))
        } throws: { error in
            "\(error)".contains("command wrote more than 100,000 bytes, the broker's limit for a result")
        }
    }
}

@Suite("Text helpers")
struct TextTests {
    @Test("thousands are grouped with commas")
    func grouped() {
        #expect(groupedDigits(3_000_000) == "3,000,000")
        #expect(groupedDigits(999) == "999")
        #expect(groupedDigits(-1234) == "-1,234")
    }

    @Test("a UTF-8 prefix never splits a character", arguments: 0...9)
    func utf8Cut(maxBytes: Int) {
        let text = Array("aé€😀".utf8)  // 1 + 2 + 3 + 4 bytes
        let cut = utf8Prefix(text, maxBytes: maxBytes)
        #expect(cut.count <= maxBytes)
        #expect(String(validating: cut, as: UTF8.self) != nil, "\(cut)")
        #expect(Array(text.prefix(cut.count)) == cut)
        #expect(maxBytes - cut.count < 4, "only a split character is dropped")
    }
}
