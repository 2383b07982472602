import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `--exec CMD`: runs `/bin/sh -c CMD` once per item, the process-per-item form for CPU-heavy
/// or untrusted work. The item's bytes are the command's stdin; its stdout is the result; a
/// non-zero exit fails the item with its stderr. The command also sees `DROVER_ITEM_ID`,
/// `DROVER_ATTEMPT`, `DROVER_QUEUE` and `DROVER_WORKER` in its environment.
public final class ExecHandler: WorkHandler {
    public let command: String
    /// Most bytes of stderr kept in a failure message.
    static let maxErrorBytes = 2048
    private let children = Mutex<Set<pid_t>>([])

    /// Creates the handler. It sets SIGPIPE to be ignored in this process: a command that
    /// exits without reading its stdin must make our write fail with EPIPE, not kill the worker.
    public init(command: String) {
        self.command = command
        signal(SIGPIPE, SIG_IGN)
    }

    /// Checks that the command's program exists, so a typo fails at start-up rather than on
    /// every item. Commands that start with shell syntax are not checked.
    public static func check(_ command: String, flag: String = "--exec") throws {
        let words = command.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = words.first.map(String.init) else {
            throw DroverError.handlerUnavailable("\(flag) needs a command, for example \(flag) 'wc -c'")
        }
        if first.contains(where: { "$\"'`=(){}<>|;&".contains($0) }) { return }
        let probe = try run(argv: ["/bin/sh", "-c", "command -v -- \"$1\" >/dev/null 2>&1", "sh", first], input: [], environment: [:])
        guard probe.status == 0 else {
            throw DroverError.handlerUnavailable(
                "\(flag) command \"\(first)\" was not found (looked in PATH=\(ProcessInfo.processInfo.environment["PATH"] ?? "")); give a full path or install it")
        }
    }

    public func handle(_ item: WorkItem) throws -> [UInt8] {
        let env = ["DROVER_ITEM_ID": item.id.description, "DROVER_ATTEMPT": String(item.attempt),
                   "DROVER_QUEUE": item.queue, "DROVER_WORKER": item.worker]
        let outcome = try Self.run(argv: ["/bin/sh", "-c", command], input: item.payload, environment: env,
                                   maxOutputBytes: item.maxResultBytes, deadline: item.deadline,
                                   track: { pid, started in
                                       self.children.withLock { if started { $0.insert(pid) } else { $0.remove(pid) } }
                                   })
        if outcome.timedOut { throw HandlerFailure("command " + item.timedOutText + "; it was stopped") }
        if outcome.outputCut {
            throw HandlerFailure("command wrote more than \(groupedDigits(item.maxResultBytes)) bytes, the broker's limit for a result (broker --max-item-size); it was stopped")
        }
        if outcome.status == 0 { return outcome.stdout }
        var stderr = String(decoding: utf8Prefix(outcome.stderr, maxBytes: Self.maxErrorBytes), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if stderr.isEmpty { stderr = "(no stderr)" }
        throw HandlerFailure("command \(Subprocess.describe(outcome.status)): \(stderr)")
    }

    public func cancelRunning() {
        for pid in children.withLock({ $0 }) { kill(-pid, SIGKILL) }  // the whole process group
    }

    struct Outcome {
        /// Exit status, or minus the signal number.
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
        /// Its stdout passed `maxOutputBytes`: it was killed and `stdout` holds only the start.
        var outputCut = false
        /// It ran past the item's deadline and was killed.
        var timedOut = false
    }

    /// Spawns `argv`, feeds `input` to its stdin while reading stdout and stderr (all three at
    /// once, so a child that writes a lot before reading cannot deadlock us), and waits for it.
    /// Our end of its stdin is non-blocking: a pipe that polls writable has room for one page,
    /// not for everything we might write, and a blocking write of more would wait for a child
    /// that is itself waiting for us to read its stdout. A child whose stdout passes
    /// `maxOutputBytes` is killed (its whole process group): nobody could take the result.
    static func run(argv: [String], input: ArraySlice<UInt8>, environment: [String: String],
                    maxOutputBytes: Int = Int.max, deadline: Int64? = nil, track: (pid_t, Bool) -> Void = { _, _ in }) throws -> Outcome {
        let child = try Subprocess.spawn(argv: argv, environment: environment)
        let pid = child.pid
        track(pid, true)
        defer { track(pid, false) }

        var out: [UInt8] = [], err: [UInt8] = []
        var outputCut = false
        var timedOut = false
        var written = 0
        var writeFD = child.stdin
        if input.isEmpty {
            close(writeFD)
            writeFD = -1
        } else {
            _ = fcntl(writeFD, F_SETFL, fcntl(writeFD, F_GETFL) | O_NONBLOCK)
        }
        var readOut = child.stdout, readErr = child.stderr
        var buffer = [UInt8](repeating: 0, count: 65536)
        while readOut >= 0 || readErr >= 0 {
            var fds = [pollfd(fd: readOut, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: readErr, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: writeFD, events: Int16(POLLOUT), revents: 0)]
            let timeout = pollMilliseconds(until: deadline)
            // A command that keeps writing never lets poll time out: the deadline is checked
            // on every turn as well.
            let ready = timeout == 0 ? 0 : poll(&fds, 3, timeout)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                // Past the item's deadline, or we cannot wait on its pipes any more: stop the
                // command and everything it started, rather than block in waitpid on a child
                // stuck writing to a pipe nobody reads.
                timedOut = ready == 0
                kill(-pid, SIGKILL)
                for fd in [readOut, readErr] where fd >= 0 { close(fd) }
                readOut = -1
                readErr = -1
                break
            }
            if writeFD >= 0, fds[2].revents != 0 {
                let n = input.withUnsafeBytes { write(writeFD, $0.baseAddress! + written, min($0.count - written, 65536)) }
                if n > 0 { written += n }
                // EPIPE: the command does not read its stdin; that is its business.
                if n <= 0 && errno != EINTR && errno != EAGAIN || written == input.count {
                    close(writeFD)
                    writeFD = -1
                }
            }
            for (index, fdRef) in [(0, readOut), (1, readErr)] where fdRef >= 0 && fds[index].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fdRef, $0.baseAddress, $0.count) }
                if n > 0 {
                    if index == 1 {
                        // Only the start of stderr is reported; the rest is read and dropped.
                        if err.count < maxErrorBytes { err += buffer[0..<min(n, maxErrorBytes - err.count)] }
                    } else if out.count + n <= maxOutputBytes {
                        out += buffer[0..<n]
                    } else {
                        outputCut = true
                        kill(-pid, SIGKILL)
                        // Both ends go: a descendant that left the group could hold stderr open.
                        close(readOut)
                        readOut = -1
                        if readErr >= 0 { close(readErr) }
                        readErr = -1
                        break
                    }
                } else if n == 0 || errno != EINTR {
                    close(fdRef)
                    if index == 0 { readOut = -1 } else { readErr = -1 }
                }
            }
        }
        if writeFD >= 0 { close(writeFD) }
        // Its pipes are closed but it may still run (it closed or redirected them): the deadline
        // holds here too.
        if let deadline, !timedOut, child.wait(until: deadline) == nil {
            timedOut = true
            kill(-pid, SIGKILL)
        }
        let code = child.wait()
        return Outcome(status: code, stdout: out, stderr: err, outputCut: outputCut, timedOut: timedOut)
    }
}
