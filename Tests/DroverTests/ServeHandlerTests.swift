import DroverProtocol
import Foundation
import Logging
import Synchronization
import Testing
@testable import Drover

@Suite("--serve: long-lived handler processes")
struct ServeHandlerTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func item(_ text: String, _ n: UInt64 = 1) -> WorkItem {
        WorkItem(id: ItemID(high: 5, low: n), attempt: 1, queue: "q", payload: Array(text.utf8)[...], worker: "w",
                 maxResultBytes: 1 << 20)
    }

    /// A frames-mode handler in Python with only its standard library, as docs/HANDLERS.md shows.
    static let pythonFrames = """
        python3 -c '
        import struct, sys
        inp, out = sys.stdin.buffer, sys.stdout.buffer
        while True:
            head = inp.read(4)
            if len(head) < 4:
                break
            body = inp.read(struct.unpack(">I", head)[0])
            item_id, attempt, payload = body[:16].hex(), struct.unpack(">I", body[16:20])[0], body[20:]
            if payload == b"fail":
                reply = b"\\x01" + b"asked to fail (attempt %d)" % attempt
            else:
                reply = b"\\x00" + payload.upper() + b" " + item_id.encode()
            out.write(struct.pack(">I", len(reply)) + reply)
            out.flush()
        '
        """

    @Test("lines: one process answers item after item; the n-th line out is the n-th item's result")
    func lines() throws {
        let handler = ServeHandler(command: "stdbuf -oL tr a-z A-Z", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        for n in 1...50 { #expect(try handler.handle(item("item \(n)")) == Array("ITEM \(n)".utf8)) }
        #expect(handler.liveProcesses == 1, "one process served them all")
    }

    @Test("lines: an item with a newline is refused with a pointer to frames")
    func newlineRefused() {
        let handler = ServeHandler(command: "cat", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        #expect { try handler.handle(item("a\nb")) } throws: { "\($0)".contains("use --serve-format frames") }
    }

    @Test("lines: a 4 MiB item goes through cat without a deadlock", .timeLimit(.minutes(1)))
    func largeLine() throws {
        let handler = ServeHandler(command: "cat", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let text = String(repeating: "x", count: 4 << 20)
        var big = item(text)
        big.maxResultBytes = 8 << 20
        #expect(try handler.handle(big).count == 4 << 20)
    }

    @Test("frames: id, attempt and payload in; success or failure with text out, binary-safe")
    func frames() throws {
        let handler = ServeHandler(command: Self.pythonFrames, format: .frames, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let result = try handler.handle(item("a\nb\0c", 7))
        #expect(String(decoding: result, as: UTF8.self) == "A\nB\0C 00000000000000050000000000000007")
        #expect { try handler.handle(item("fail")) } throws: { "\($0)" == "asked to fail (attempt 1)" }
        #expect(handler.liveProcesses == 1, "a failed item does not end the process")
    }

    @Test("handler threads each get a process of their own")
    func concurrent() throws {
        let handler = ServeHandler(command: "stdbuf -oL tr a-z A-Z", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for n in 0..<100 {
                let text = "t\(thread) n\(n)"
                if (try? handler.handle(item(text))) != Array(text.uppercased().utf8) { failures.withLock { $0 += 1 } }
            }
        }
        #expect(failures.withLock { $0 } == 0)
        #expect((1...4).contains(handler.liveProcesses))
    }

    @Test("a process that exits fails the item it held and is started again; one that keeps dying backs off")
    func restarts() throws {
        // Exits with status 3 when it reads "die", without answering.
        let handler = ServeHandler(command: "while IFS= read -r l; do [ \"$l\" = die ] && exit 3; echo \"$l\"; done",
                                   format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        #expect(try handler.handle(item("one")) == Array("one".utf8))
        #expect { try handler.handle(item("die")) } throws: { "\($0)".contains("the handler process exited with status 3") }
        #expect(handler.deathsInARow == 1)
        #expect(try handler.handle(item("two")) == Array("two".utf8), "a new process took over")
        #expect(handler.deathsInARow == 0)

        let broken = ServeHandler(command: "exit 3", format: .lines, logger: logger)
        for n in 1...3 {
            #expect { try broken.handle(item("x")) } throws: { "\($0)".contains("exited with status 3") }
            #expect(broken.deathsInARow == n)
        }
        #expect(broken.restartBackoffMilliseconds == 400, "100, 200, 400 ms: doubling while it keeps dying")
    }

    /// Runs `items` as one batch; the outcomes by index, and the order they were reported in.
    func batch(_ handler: ServeHandler, _ items: [WorkItem]) -> (outcomes: [Int: Result<[UInt8], any Error>], order: [Int]) {
        var outcomes: [Int: Result<[UInt8], any Error>] = [:]
        var order: [Int] = []
        handler.handle(batch: items) { index, result in
            #expect(outcomes[index] == nil, "each item is reported once")
            outcomes[index] = result
            order.append(index)
        }
        return (outcomes, order)
    }

    @Test("several items in flight in one process: all written before the first answer, answered in order", .timeLimit(.minutes(1)))
    func pipelined() throws {
        // Reads 40 lines before it answers any: this only works if the items are written
        // without waiting for answers (one at a time, the first item would time out).
        let handler = ServeHandler(command: """
            python3 -c '
            import sys
            while True:
                lines = [sys.stdin.readline() for _ in range(40)]
                if not lines[-1]:
                    break
                sys.stdout.write("".join(line.upper() for line in lines))
                sys.stdout.flush()
            '
            """, format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let items = (1...40).map { n in
            var item = item("item \(n)", UInt64(n))
            item.timeoutMilliseconds = 20_000
            item.deadline = monotonicMilliseconds() + 20_000
            return item
        }
        let (outcomes, order) = batch(handler, items)
        #expect(order == Array(0..<40))
        for (index, item) in items.enumerated() {
            #expect(try outcomes[index]?.get() == Array(String(decoding: item.payload, as: UTF8.self).uppercased().utf8))
        }
        #expect(handler.liveProcesses == 1, "one process ran the whole batch")
    }

    @Test("a batch of large items goes in runs of about 1 MiB, every item answered in order", .timeLimit(.minutes(1)))
    func largeBatch() throws {
        let handler = ServeHandler(command: "stdbuf -oL tr a-z A-Z", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let items = (0..<7).map { n in item(String(repeating: Character(UnicodeScalar(UInt8(97 + n))), count: 400_000), UInt64(n)) }
        let (outcomes, order) = batch(handler, items)
        #expect(order == Array(0..<7))
        for (index, item) in items.enumerated() {
            #expect(try outcomes[index]?.get() == Array(String(decoding: item.payload, as: UTF8.self).uppercased().utf8))
        }
    }

    @Test("a process that dies mid-batch fails the item it was on and every item behind it; the ones answered stand")
    func diesMidBatch() throws {
        let handler = ServeHandler(command: "while IFS= read -r l; do [ \"$l\" = die ] && exit 3; echo \"$l\"; done",
                                   format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        let items = ["a", "b", "die", "c", "d"].enumerated().map { item($0.element, UInt64($0.offset)) }
        let (outcomes, order) = batch(handler, items)
        #expect(order == [0, 1, 2, 3, 4])
        #expect(try outcomes[0]?.get() == Array("a".utf8))
        #expect(try outcomes[1]?.get() == Array("b".utf8))
        for index in 2...4 {
            #expect(throws: (any Error).self) { try outcomes[index]?.get() }
        }
        if case .failure(let error)? = outcomes[3] {
            #expect("\(error)".contains("exited with status 3") && "\(error)".contains("waiting behind another"))
        }
        #expect(handler.deathsInARow == 1)
        #expect(try handler.handle(item("again")) == Array("again".utf8), "a new process took over")
    }

    @Test("a process that exits between items is replaced without failing the next item")
    func exitWhileIdle() throws {
        // Answers one item and exits, as a handler that recycles itself would.
        let handler = ServeHandler(command: "sed -u 1q", format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        #expect(try handler.handle(item("one")) == Array("one".utf8))
        let pids = handler.livePIDs
        // Wait for the exit itself (the process turns zombie), not for a time.
        let limit = Date().addingTimeInterval(10)
        while Date() < limit, !pids.allSatisfy({ pid in
            ((try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first) == "Z"
        }) { sched_yield() }
        #expect(try handler.handle(item("two")) == Array("two".utf8))
        #expect(handler.deathsInARow == 0, "not counted as a death")
    }

    @Test("a result over the broker's limit stops the process and fails the item")
    func oversizeResult() {
        let handler = ServeHandler(command: "yes | tr -d '\\n'", format: .lines, logger: logger)  // one endless line
        var small = item("x")
        small.maxResultBytes = 100_000
        #expect { try handler.handle(small) } throws: { "\($0)".contains("the broker's limit of 100,000 bytes") }
        #expect(handler.liveProcesses == 0)
    }

    @Test("shutdown closes each process's stdin and waits for it to exit")
    func shutdown() throws {
        let handler = ServeHandler(command: "cat", format: .lines, logger: logger)
        _ = try handler.handle(item("x"))
        #expect(handler.liveProcesses == 1)
        handler.shutdown(deadlineMilliseconds: 5000)
        #expect(handler.liveProcesses == 0)
    }
}

@Suite("Per-item timeouts for process handlers")
struct ItemTimeoutTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func item(timeoutMilliseconds: Int64) -> WorkItem {
        var item = WorkItem(id: ItemID(high: 5, low: 1), attempt: 1, queue: "q", payload: Array("x".utf8)[...], worker: "w",
                            maxResultBytes: 1 << 20, deadline: monotonicMilliseconds() + timeoutMilliseconds)
        item.timeoutMilliseconds = timeoutMilliseconds
        return item
    }

    @Test("a closure's cancellation signal: raised past the deadline, or when the worker gives up on running items")
    func cancellationSignal() {
        var item = WorkItem(id: ItemID(high: 5, low: 1), attempt: 1, queue: "q", payload: [], worker: "w")
        #expect(!item.isCancelled, "no deadline, no cancellation")
        item.deadline = monotonicMilliseconds() + 60_000
        #expect(!item.isCancelled)
        item.deadline = monotonicMilliseconds() - 1
        #expect(item.isCancelled, "past its deadline")
        let flag = Cancellation()
        var running = WorkItem(id: ItemID(high: 5, low: 2), attempt: 1, queue: "q", payload: [], worker: "w")
        running.cancellation = flag
        #expect(!running.isCancelled)
        flag.cancel()
        #expect(running.isCancelled, "the worker gave up on running items")
        #expect(!Cancellation.never.isCancelled)
    }

    @Test("the worker's and the producer's limits: the smaller wins, and the message names which one it was")
    func smallerLimitWins() {
        var item = WorkItem(id: ItemID(high: 5, low: 1), attempt: 1, queue: "q", payload: [], worker: "w")
        item.limit(worker: nil, producer: 0)
        #expect(item.deadline == nil && item.timeoutMilliseconds == nil)
        item.limit(worker: 2000, producer: 0)
        #expect(item.timeoutMilliseconds == 2000 && item.timedOutText.hasSuffix("(worker --item-timeout)"))
        item.limit(worker: 2000, producer: 500)
        #expect(item.timeoutMilliseconds == 500 && item.timedOutText == "timed out after 0.5 s (send --item-timeout)")
        item.limit(worker: nil, producer: 700)
        #expect(item.timeoutMilliseconds == 700 && item.deadline != nil)
        var other = WorkItem(id: ItemID(high: 5, low: 1), attempt: 1, queue: "q", payload: [], worker: "w")
        other.limit(worker: 300, producer: 500)
        #expect(other.timeoutMilliseconds == 300 && other.timedOutText.hasSuffix("(worker --item-timeout)"))
    }

    @Test("--exec: a command past the deadline is killed with everything it started, and the item fails", .timeLimit(.minutes(1)))
    func exec() {
        // The sleep is a grandchild: killing the shell alone would leave it holding the pipes.
        #expect { try ExecHandler(command: "sleep 30; echo late").handle(item(timeoutMilliseconds: 300)) } throws: {
            "\($0)" == "command timed out after 0.3 s (worker --item-timeout); it was stopped"
        }
    }

    @Test("--serve: a process past the deadline is stopped, the item fails, and the next item gets a new process", .timeLimit(.minutes(1)))
    func serve() throws {
        // Answers "fast" at once and hangs on anything else.
        let handler = ServeHandler(command: "while IFS= read -r line; do [ \"$line\" = fast ] || sleep 30; echo \"$line\"; done",
                                   format: .lines, logger: logger)
        defer { handler.shutdown(deadlineMilliseconds: 5000) }
        #expect { try handler.handle(item(timeoutMilliseconds: 300)) } throws: {
            "\($0)" == "the handler timed out after 0.3 s (worker --item-timeout); its process was stopped"
        }
        #expect(handler.liveProcesses == 0)
        var fast = item(timeoutMilliseconds: 10_000)
        fast.payload = Array("fast".utf8)[...]
        #expect(try handler.handle(fast) == Array("fast".utf8))
    }
}
