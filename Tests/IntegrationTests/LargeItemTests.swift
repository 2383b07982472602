import Foundation
import Testing

extension ProcessTests {
    /// Items, lines and results near and over the broker's size limit, end to end.
    @Suite("Large items and results")
    struct LargeItemTests {
        @Test("a 200 MB line in --file is refused by its line number and the other lines still run; exit 1")
        func hugeLineInFile() throws {
            let sandbox = try Sandbox("hugeline")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            _ = try sandbox.worker("w", broker: broker, ["--exec", "tr a-z A-Z"])
            let file = sandbox.path("items")
            _ = FileManager.default.createFile(atPath: file, contents: Data("first\n".utf8))
            let handle = try #require(FileHandle(forWritingAtPath: file))
            handle.seekToEndOfFile()
            let block = Data(repeating: UInt8(ascii: "x"), count: 1 << 20)
            for _ in 0..<200 { handle.write(block) }
            handle.write(Data("\nlast\n".utf8))
            try handle.close()
            // Before the fix this line alone took minutes of CPU: every read searched the whole
            // buffer for a newline again.
            let sent = try sandbox.run(["send", "--broker", broker, "--wait", "--file", file], timeout: 60)
            #expect(sent.status == 1)
            #expect(Set(sent.lines) == ["FIRST", "LAST"], "\(sent.stdout.prefix(200))")
            #expect(sent.stderr.contains("item 2 was not accepted: line 2 is over the broker's limit of 1,048,576 bytes"), "\(sent.stderr)")
            #expect(sent.stderr.contains("3 items: 2 accepted"), "\(sent.stderr)")
        }

        @Test("a result over the broker's limit fails its item, which is retried and dead-lettered, never left hanging")
        func oversizeResult() throws {
            let sandbox = try Sandbox("bigresult")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker(["--max-deliveries", "2", "--retry-base-ms", "20"])
            _ = try sandbox.worker("w", broker: broker, ["--exec", "head -c 3000000 /dev/zero"])
            let sent = try sandbox.run(["send", "--broker", broker, "--wait", "small-item"], timeout: 60)
            #expect(sent.status == 1)
            #expect(sent.stderr.contains("dead-lettered after 2 failed deliveries: command wrote more than 1,048,576 bytes, the broker's limit for a result"),
                    "\(sent.stderr)")
            let list = try sandbox.run(["dlq", "list", "--broker", broker])
            #expect(list.stdout.contains("attempts=2  failures=2"), "\(list.stdout)")
        }

        @Test("results just under the limit, several to a done batch, all reach the producer")
        func manyLargeResults() throws {
            let sandbox = try Sandbox("largeresults")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker()
            // 900 KB per result; a batch of them in one frame was over the broker's frame limit,
            // which dropped the worker's connection and left its items leased.
            _ = try sandbox.worker("w", broker: broker, ["--threads", "4", "--lookahead", "60",
                                                         "--exec", "head -c 900000 /dev/zero | tr '\\\\0' a"])
            let sent = try sandbox.run(["send", "--broker", broker, "--wait"] + (1...12).map(String.init), timeout: 120)
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(sent.lines.count == 12)
            #expect(sent.lines.allSatisfy { $0.count == 900_000 })
        }

        @Test("--exec passes a 4 MiB item through od -v, whose 13 MB of output is the result, without a deadlock")
        func largeItemThroughOd() throws {
            let sandbox = try Sandbox("od")
            defer { sandbox.tearDown() }
            let (_, broker) = try sandbox.broker(["--max-item-size", String(16 << 20)])
            // od writes its output before it has read all of its input, and the worker reads
            // that output itself: with a blocking write of our end of od's stdin, both waited
            // on each other for good.
            _ = try sandbox.worker("w", broker: broker, ["--exec", "od -v -An -tx1"])
            let item = String(repeating: "z", count: 4 << 20)
            let sent = try sandbox.run(["send", "--broker", broker, "--wait"], stdin: item + "\n", timeout: 60)
            #expect(sent.status == 0, "\(sent.stderr)")
            let lines = sent.lines
            #expect(lines.count == (4 << 20) / 16, "a line of od output per 16 bytes")
            #expect(lines.first?.trimmingCharacters(in: .whitespaces) == Array(repeating: "7a", count: 16).joined(separator: " "))
        }
    }
}
