import DroverProtocol
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `--serve CMD`: long-lived handler processes, in any language. CMD (run by `/bin/sh -c`) is
/// started once per handler thread when it is first needed and kept running; items go to it
/// over its stdin and outcomes come back over its stdout, in one of two framings
/// (docs/HANDLERS.md):
///
/// - ``Format/lines`` (the default): one item per line in, the n-th line out is the n-th
///   item's result. `for line in sys.stdin: print(line.upper(), flush=True)` is a handler.
/// - ``Format/frames``: binary-safe. In: a 4-byte big-endian length, then the 16-byte item
///   id, the 4-byte attempt and the payload. Out: a 4-byte big-endian length, then a status
///   byte (0 succeeded, anything else failed) and the result or error text.
///
/// A handler thread writes up to ``inFlightLimit`` items to its process without waiting for
/// answers (as many as are queued for it), so the process reads its next item while its answer
/// to the last is on the way back; answers come back in order.
///
/// A process that exits or crashes fails the items it held (each a failed delivery, retried
/// per the queue's policy) and is started again when next needed, after a backoff that doubles
/// while it keeps dying (up to ``maxBackoffMilliseconds``), so a broken handler is reported in
/// the log instead of spinning. Its stderr goes to the worker's log, line by line, tagged with
/// its pid. ``shutdown(deadlineMilliseconds:)`` closes every process's stdin and waits for it.
public final class ServeHandler: WorkHandler {
    /// How items and outcomes are framed on the handler process's stdin and stdout.
    public enum Format: String, Sendable, CaseIterable {
        case lines
        case frames
    }

    public let command: String
    public let format: Format
    private let logger: Logger
    /// Processes not running an item, ready for the next.
    private let idle = Mutex<[Subprocess]>([])
    /// Every live process, for ``cancelRunning()`` and ``shutdown(deadlineMilliseconds:)``.
    private let live = Mutex<Set<pid_t>>([])
    /// Consecutive deaths, and when the next process may start.
    private let restarts = Mutex(Restarts())
    /// Set by ``cancelRunning()`` and ``shutdown(deadlineMilliseconds:)``: no process starts after.
    private let closing = Atomic<Bool>(false)

    /// The first restart waits this long; each further death in a row doubles it.
    static let firstBackoffMilliseconds: Int64 = 100
    /// The longest wait before a restart.
    static let maxBackoffMilliseconds: Int64 = 10_000
    /// Most bytes read from a handler process per `read`.
    static let readChunk = 64 * 1024
    /// Most items in flight in one handler process (``batchLimit``).
    static let inFlightLimit = 64
    /// Most bytes of items written to a process as one run (a larger item goes alone).
    static let streamBytes = 1 << 20

    /// Processes that ended unasked, and when the next may start.
    private struct Restarts {
        /// Deaths in a row, without an item answered between.
        var failures = 0
        var notBefore: Int64 = 0
        /// Every process that ended unasked (timed out included), and the latest reason.
        var total: UInt32 = 0
        var problem = ""
    }

    /// Creates the handler; processes start when items arrive. It sets SIGPIPE to be ignored
    /// in this process: a handler process that dies must make our write fail with EPIPE, not
    /// kill the worker.
    public init(command: String, format: Format = .lines, logger: Logger) {
        self.command = command
        self.format = format
        self.logger = logger
        signal(SIGPIPE, SIG_IGN)
    }

    /// Items a handler thread keeps in flight in its process: written one after another without
    /// waiting for answers, so a process never waits for its next item while the worker holds it.
    public var batchLimit: Int { Self.inFlightLimit }

    public func handle(_ item: WorkItem) throws -> [UInt8] {
        var outcome: Result<[UInt8], any Error> = .failure(HandlerFailure("no outcome"))
        handle(batch: [item]) { _, result in outcome = result }
        return try outcome.get()
    }

    public func handle(batch items: [WorkItem], report: (Int, Result<[UInt8], any Error>) -> Void) {
        // The items go in runs whose frames add up to at most `streamBytes` (a run holds at
        // least one item), so a batch of large items does not sit in memory twice at once.
        var next = 0
        while next < items.count {
            // `ends` marks where each item's bytes end: a response may not come before its item
            // has been read.
            var stream: [UInt8] = []
            var ends: [Int] = []
            var sent: [Int] = []
            while next < items.count, sent.isEmpty || stream.count + items[next].payload.count <= Self.streamBytes {
                do {
                    stream += try encode(items[next])
                    ends.append(stream.count)
                    sent.append(next)
                } catch {
                    report(next, .failure(error))
                }
                next += 1
            }
            run(stream, ends: ends, sent: sent, of: items, report: report)
        }
    }

    /// Runs the items `sent` (indices into `items`), framed in `stream`, through one process.
    private func run(_ stream: [UInt8], ends: [Int], sent: [Int], of items: [WorkItem],
                     report: (Int, Result<[UInt8], any Error>) -> Void) {
        guard let first = sent.first else { return }
        let process: Subprocess
        do {
            process = try takeProcess(for: items[first])
        } catch {
            for index in sent { report(index, .failure(error)) }
            return
        }
        var answered = 0
        do throws(ProcessEnded) {
            try exchange(stream, ends: ends, items: sent.map { items[$0] }, with: process) { response in
                let index = sent[answered]
                answered += 1
                switch response {
                case .success(let result): report(index, .success(result))
                case .failure(let text): report(index, .failure(HandlerFailure(text)))
                }
            }
            idle.withLock { $0.append(process) }
            restarts.withLock { $0.failures = 0 }
        } catch {
            // A process that answered items before it ended is not one that keeps dying.
            if answered > 0 { restarts.withLock { $0.failures = 0 } }
            let why = ended(process, error)
            for (position, index) in sent[answered...].enumerated() {
                let text = position == 0 ? why : "\(why) (this item was waiting behind another in the same handler process)"
                report(index, .failure(HandlerFailure(text)))
            }
        }
    }

    /// Whether `item` may be sent in line mode: no line break inside it (Python and Node split
    /// lines at a lone `\r` too).
    private static func fitsOnALine(_ payload: ArraySlice<UInt8>) -> Bool {
        !payload.contains { $0 == 0x0A || $0 == 0x0D }
    }

    public func cancelRunning() {
        closing.store(true, ordering: .releasing)
        for pid in live.withLock({ $0 }) { kill(-pid, SIGKILL) }
    }

    /// Closes every idle process's stdin (a handler's cue to finish) and waits up to
    /// `deadlineMilliseconds` for them to exit; any still running then is killed.
    public func shutdown(deadlineMilliseconds: Int64) {
        closing.store(true, ordering: .releasing)
        let processes = idle.withLock { taken in
            defer { taken.removeAll() }
            return taken
        }
        let closed = processes.map { process in
            var closed = process
            close(closed.stdin)
            closed.stdin = -1
            return closed
        }
        let giveUp = monotonicMilliseconds() + deadlineMilliseconds
        for process in closed {
            if let code = process.wait(until: giveUp) {
                finish(process, code: code, expected: true)
            } else {
                logger.warning("handler process still running at the deadline; killing it", metadata: ["pid": "\(process.pid)"])
                process.kill()
                finish(process, code: process.wait(), expected: true)
            }
        }
    }

    /// Handler processes alive now (for tests and status).
    var liveProcesses: Int { live.withLock { $0.count } }
    /// Their pids.
    var livePIDs: [pid_t] { live.withLock { Array($0) } }
    /// Processes that died in a row, without answering an item between.
    var deathsInARow: Int { restarts.withLock { $0.failures } }

    public var health: HandlerHealth {
        restarts.withLock { HandlerHealth(restarts: $0.total, deathsInARow: UInt32(clamping: $0.failures), problem: $0.problem) }
    }
    /// The wait before the next start after the latest death.
    var restartBackoffMilliseconds: Int64 {
        let failures = deathsInARow
        return failures == 0 ? 0 : Self.backoff(afterDeaths: failures)
    }

    static func backoff(afterDeaths failures: Int) -> Int64 {
        min(firstBackoffMilliseconds << min(failures - 1, 20), maxBackoffMilliseconds)
    }

    // MARK: Processes

    /// An idle process, or a new one (after the restart backoff, if processes keep dying).
    private func takeProcess(for item: WorkItem) throws -> Subprocess {
        while let process = idle.withLock({ $0.popLast() }) {
            // One that exited while idle (a handler that recycles itself every N items) is
            // replaced without failing an item that it never saw.
            if let code = process.exited() {
                finish(process, code: code, expected: true)
                continue
            }
            // Output nobody asked for would be taken as the next item's answer, and every
            // answer after it would be one off: such a process is replaced.
            var waiting = pollfd(fd: process.stdout, events: Int16(POLLIN), revents: 0)
            if poll(&waiting, 1, 0) > 0 {
                logger.warning("the handler process wrote output between items; replacing it", metadata: ["pid": "\(process.pid)"])
                process.kill()
                finish(process, code: process.wait(), expected: false)
                continue
            }
            return process
        }
        // After deaths in a row, wait out the backoff, a few milliseconds at a time so that a
        // stop is not held up by it.
        while monotonicMilliseconds() < restarts.withLock({ $0.notBefore }), !closing.load(ordering: .acquiring) {
            pause(milliseconds: 20)
        }
        guard !closing.load(ordering: .acquiring) else { throw HandlerFailure("the worker is stopping; no handler process is started") }
        let process = try Subprocess.spawn(argv: ["/bin/sh", "-c", command],
                                           environment: ["DROVER_QUEUE": item.queue, "DROVER_WORKER": item.worker])
        _ = fcntl(process.stdin, F_SETFL, fcntl(process.stdin, F_GETFL) | O_NONBLOCK)
        live.withLock { _ = $0.insert(process.pid) }
        if closing.load(ordering: .acquiring) { process.kill() }  // a stop that came while it started
        logger.info("handler process started", metadata: ["pid": "\(process.pid)", "command": "\(command)"])
        let stderr = process.stderr, pid = process.pid, logger = logger
        // Its stderr, line by line, into our log; the thread ends when the process does.
        Thread.detachNewThread {
            func log(_ line: ArraySlice<UInt8>) {
                logger.warning("handler: \(String(decoding: utf8Prefix(line, maxBytes: 4096), as: UTF8.self))", metadata: ["pid": "\(pid)"])
            }
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(stderr, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending += buffer[0..<n]
                while let newline = pending.firstIndex(of: 0x0A) {
                    log(pending[..<newline])
                    pending.removeSubrange(...newline)
                }
                if pending.count > 4096 {
                    log(pending[...])  // a line this long is logged in pieces
                    pending.removeAll()
                }
            }
            if !pending.isEmpty { log(pending[...]) }
            close(stderr)
        }
        return process
    }

    /// A process stopped answering: reaps it, schedules the next start, and says why in a
    /// message for the item it was running.
    private func ended(_ process: Subprocess, _ failure: ProcessEnded) -> String {
        process.kill()
        let code = process.wait()
        finish(process, code: code, expected: false)
        let how = failure.reason ?? "the handler process \(Subprocess.describe(code))"
        let (failures, backoff) = restarts.withLock { state -> (Int, Int64) in
            state.total &+= 1
            state.problem = how
            // A process stopped for running too long is not a process that keeps dying.
            if failure.timedOut { return (state.failures, 0) }
            state.failures += 1
            let backoff = Self.backoff(afterDeaths: state.failures)
            state.notBefore = monotonicMilliseconds() + backoff
            return (state.failures, backoff)
        }
        logger.error("handler process ended; starting another when needed", metadata: [
            "pid": "\(process.pid)", "reason": "\(how)", "deaths-in-a-row": "\(failures)", "restart-in-ms": "\(backoff)"])
        return how
    }

    private func finish(_ process: Subprocess, code: Int32, expected: Bool) {
        live.withLock { _ = $0.remove(process.pid) }
        if process.stdin >= 0 { close(process.stdin) }
        close(process.stdout)
        if expected { logger.info("handler process exited", metadata: ["pid": "\(process.pid)", "status": "\(code)"]) }
    }

    // MARK: Framing

    private enum Response {
        case success([UInt8])
        case failure(String)
    }

    /// The process died or broke the framing; `reason` overrides "exited with status N".
    private struct ProcessEnded: Error {
        var reason: String? = nil
        var timedOut = false
    }

    private func encode(_ item: WorkItem) throws -> [UInt8] {
        switch format {
        case .lines:
            guard Self.fitsOnALine(item.payload) else {
                throw HandlerFailure("the item contains a line break (\\n or \\r), which --serve-format lines cannot carry; use --serve-format frames")
            }
            var line = Array(item.payload)
            line.append(0x0A)
            return line
        case .frames:
            let length = UInt32(16 + 4 + item.payload.count)
            var frame: [UInt8] = []
            frame.reserveCapacity(4 + Int(length))
            appendBigEndian(length, to: &frame)
            appendBigEndian(item.id.high, to: &frame)
            appendBigEndian(item.id.low, to: &frame)
            appendBigEndian(item.attempt, to: &frame)
            frame += item.payload
            return frame
        }
    }

    /// The response at the start of `buffer`, removing it, or `nil` when it is not all there.
    /// `scanned`: how many bytes at the start are known to hold no newline (each byte is
    /// searched once, however many reads a long line takes).
    private func decode(_ buffer: inout [UInt8], scanned: inout Int, maxResultBytes: Int) throws(ProcessEnded) -> Response? {
        switch format {
        case .lines:
            guard let newline = buffer[scanned...].firstIndex(of: 0x0A) else {
                scanned = buffer.count
                if buffer.count > maxResultBytes {
                    throw ProcessEnded(reason: "the handler's result passed the broker's limit of \(groupedDigits(maxResultBytes)) bytes without a newline")
                }
                return nil
            }
            var end = newline
            if end > 0 && buffer[end - 1] == 0x0D { end -= 1 }
            let result = Array(buffer[..<end])
            buffer.removeSubrange(...newline)
            scanned = 0
            return .success(result)
        case .frames:
            guard buffer.count >= 4 else { return nil }
            let length = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
            guard length >= 1 else { throw ProcessEnded(reason: "the handler wrote a frame of length 0; a frame holds at least its status byte") }
            guard length - 1 <= maxResultBytes else {
                throw ProcessEnded(reason: "the handler's result of \(groupedDigits(length - 1)) bytes is over the broker's limit of \(groupedDigits(maxResultBytes))")
            }
            guard buffer.count >= 4 + length else { return nil }
            let status = buffer[4]
            let body = Array(buffer[5..<(4 + length)])
            buffer.removeSubrange(..<(4 + length))
            return status == 0 ? .success(body) : .failure(String(decoding: utf8Prefix(body, maxBytes: 16 * 1024), as: UTF8.self))
        }
    }

    /// Writes `request` (the items' frames, item k ending at `ends[k]`) while reading the
    /// responses, both at the pace the process sets: a process may answer an item before it has
    /// read the next, and a blocking write would then wait for a process that waits for us.
    /// Calls `answer` with each response, in order. An item's time limit counts from when the
    /// process could start on it: when the previous answer came.
    private func exchange(_ request: [UInt8], ends: [Int], items: [WorkItem], with process: Subprocess,
                          answer: (Response) -> Void) throws(ProcessEnded) {
        var written = 0
        var answered = 0
        var received: [UInt8] = []
        var scanned = 0
        var buffer = [UInt8](repeating: 0, count: Self.readChunk)
        var deadline = items[0].deadline
        while true {
            while answered < items.count,
                  let response = try decode(&received, scanned: &scanned, maxResultBytes: items[answered].maxResultBytes) {
                guard written >= ends[answered] else {
                    throw ProcessEnded(reason: "the handler answered before it had read the whole item; a response must follow its item")
                }
                answer(response)
                answered += 1
                if answered < items.count {
                    deadline = items[answered].timeoutMilliseconds.map { monotonicMilliseconds() + $0 }
                }
            }
            if answered == items.count {
                if !received.isEmpty {
                    logger.warning("the handler wrote more responses than it was given items; the extra bytes are dropped",
                                   metadata: ["pid": "\(process.pid)", "bytes": "\(received.count)"])
                }
                return
            }
            var fds = [pollfd(fd: process.stdout, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: written < request.count ? process.stdin : -1, events: Int16(POLLOUT), revents: 0)]
            let ready = poll(&fds, 2, pollMilliseconds(until: deadline))
            if ready == 0 {
                throw ProcessEnded(reason: "the handler " + items[answered].timedOutText + "; its process was stopped", timedOut: true)
            }
            if ready < 0 {
                if errno == EINTR { continue }
                throw ProcessEnded(reason: "cannot wait on the handler process: \(String(cString: strerror(errno)))")
            }
            if fds[1].revents != 0 {
                let n = request.withUnsafeBytes { write(process.stdin, $0.baseAddress! + written, min($0.count - written, Self.readChunk)) }
                if n > 0 {
                    written += n
                } else if errno != EINTR && errno != EAGAIN {
                    throw ProcessEnded()  // EPIPE: it closed its stdin or died
                }
            }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(process.stdout, $0.baseAddress, $0.count) }
                if n > 0 {
                    received += buffer[0..<n]
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    throw ProcessEnded()  // its stdout closed: it exited
                }
            }
        }
    }
}

private func appendBigEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
}
