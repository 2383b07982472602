import Foundation
import Testing

/// Every suite that runs whole fleets nests in here, so they run one test at a time: each
/// starts several processes, and these machines have two cores.
@Suite("Real drover processes", .serialized)
enum ProcessTests {}

/// Runs real `drover` processes for one test, each with its own files, and kills every one of
/// them when the test ends. Ports are chosen by the OS (`tcp://127.0.0.1:*`) and read back
/// from each process's ready file, so tests running in parallel never collide.
final class Sandbox: @unchecked Sendable {
    let directory: String
    private var processes: [DroverProcess] = []
    private let lock = NSLock()
    private var counter = 0

    init(_ name: String) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("drover-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Kills every process this sandbox started and removes its files.
    func tearDown() {
        for process in lock.withLock({ processes }) { process.kill() }
        // DROVER_TEST_KEEP=1 keeps every sandbox (its processes' logs) for a look afterwards.
        if ProcessInfo.processInfo.environment["DROVER_TEST_KEEP"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }

    func path(_ name: String) -> String { "\(directory)/\(name)" }

    /// Starts `drover ARGUMENTS…` in the background, with `environment` added to a copy of
    /// this process's (less any `DROVER_*` variable but `DROVER_BIN`), inside network namespace
    /// `namespace` when one is given.
    @discardableResult
    func start(_ name: String, _ arguments: [String], stdin: String? = nil, stdinPipe: Pipe? = nil,
               environment: [String: String] = [:], namespace: String? = nil) throws -> DroverProcess {
        let process = try DroverProcess(name: name, arguments: arguments, directory: directory, stdin: stdin, stdinPipe: stdinPipe,
                                        environment: environment, namespace: namespace)
        lock.withLock { processes.append(process) }
        return process
    }

    /// Runs `drover ARGUMENTS…` to completion (killed after `timeout` seconds).
    func run(_ arguments: [String], stdin: String? = nil, timeout: Double = 60,
             environment: [String: String] = [:], namespace: String? = nil) throws -> Finished {
        let name = lock.withLock { counter += 1; return "run-\(counter)" }
        let process = try start(name, arguments, stdin: stdin, environment: environment, namespace: namespace)
        guard let status = process.wait(seconds: timeout) else {
            process.kill()
            Issue.record("drover \(arguments.joined(separator: " ")) did not finish within \(timeout) s; stderr: \(process.stderr)")
            return Finished(status: -1, stdout: process.stdout, stderr: process.stderr)
        }
        return Finished(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    struct Finished {
        var status: Int32
        var stdout: String
        var stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    // MARK: Roles

    /// Starts a broker on an OS-chosen port; returns its endpoint once it is listening.
    func broker(_ extra: [String] = []) throws -> (process: DroverProcess, endpoint: String) {
        let ready = path("broker-\(UInt16.random(in: 0...UInt16.max)).ready")
        let process = try start("broker", ["broker", "--bind", "tcp://127.0.0.1:*", "--ready-file", ready] + extra)
        let lines = try waitForFile(ready, process: process)
        return (process, lines[0])
    }

    /// Starts a controller; returns its publish and command endpoints once it is listening.
    func controller(broker: String, _ extra: [String] = []) throws -> (process: DroverProcess, publish: String, commands: String) {
        let ready = path("controller.ready")
        let process = try start("controller", ["controller", "--broker", broker, "--publish", "tcp://127.0.0.1:*",
                                               "--bind", "tcp://127.0.0.1:*", "--ready-file", ready] + extra)
        let lines = try waitForFile(ready, process: process)
        return (process, lines[0], lines[1])
    }

    /// Starts a worker and waits until it has registered with the broker.
    func worker(_ name: String, broker: String, control: String? = nil, _ extra: [String]) throws -> DroverProcess {
        let ready = path("\(name).ready")
        var arguments = ["worker", "--broker", broker, "--name", name, "--ready-file", ready]
        if let control { arguments += ["--control", control] }
        let process = try start(name, arguments + extra)
        _ = try waitForFile(ready, process: process)
        return process
    }

    /// Waits for a ready file to appear (the event), failing early if the process dies.
    func waitForFile(_ path: String, process: DroverProcess, seconds: Double = 30) throws -> [String] {
        let limit = Date().addingTimeInterval(seconds)
        while Date() < limit {
            if let text = try? String(contentsOfFile: path, encoding: .utf8) { return text.split(separator: "\n").map(String.init) }
            if let status = process.exitStatus {
                throw HarnessError("\(process.name) exited with \(status) before it was ready: \(process.stderr)")
            }
            process.waitForChange(seconds: 0.05)
        }
        throw HarnessError("\(process.name) was not ready within \(seconds) s: \(process.stderr)")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One `drover` child process with its output in files.
final class DroverProcess: @unchecked Sendable {
    let name: String
    private let process = Process()
    private let stdoutPath: String
    private let stderrPath: String
    private let exited = DispatchSemaphore(value: 0)

    static let executable: String = {
        if let path = ProcessInfo.processInfo.environment["DROVER_BIN"] { return path }
        // The test bundle sits beside the products in .build/<triple>/debug.
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if directory.lastPathComponent.hasSuffix(".xctest") { directory.deleteLastPathComponent() }
        return directory.appendingPathComponent("drover").path
    }()

    init(name: String, arguments: [String], directory: String, stdin: String?, stdinPipe: Pipe? = nil,
         environment: [String: String] = [:], namespace: String? = nil) throws {
        self.name = name
        stdoutPath = "\(directory)/\(name).stdout"
        stderrPath = "\(directory)/\(name).stderr"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        if let namespace {
            // `ip netns exec` enters the namespace and then execs drover: the pid stays drover's.
            process.executableURL = URL(fileURLWithPath: NetworkLab.ip)
            process.arguments = ["netns", "exec", namespace, Self.executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.executable)
            process.arguments = arguments
        }
        var inherited = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("DROVER_") || $0.key == "DROVER_BIN" }
        // A home of the test's own: a broker's default data directory (~/.local/state/drover)
        // is then the test's, so brokers of tests running side by side never share a journal.
        inherited["HOME"] = directory
        inherited["XDG_STATE_HOME"] = nil
        inherited["STATE_DIRECTORY"] = nil
        inherited.merge(environment) { $1 }
        process.environment = inherited
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        if let stdinPipe {
            process.standardInput = stdinPipe
        } else if let stdin {
            let input = "\(directory)/\(name).stdin"
            FileManager.default.createFile(atPath: input, contents: Data(stdin.utf8))
            process.standardInput = FileHandle(forReadingAtPath: input)
        } else {
            process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        }
        process.terminationHandler = { [exited] _ in exited.signal() }
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// Waits for the process to exit; returns its status, or nil after `seconds`.
    func wait(seconds: Double) -> Int32? {
        guard exited.wait(timeout: .now() + seconds) == .success else { return nil }
        exited.signal()  // later waiters see it too
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Blocks until the process exits or `seconds` pass (a bounded wait on the exit event).
    func waitForChange(seconds: Double) {
        if exited.wait(timeout: .now() + seconds) == .success { exited.signal() }
    }

    func signal(_ sig: Int32) {
        if process.isRunning { Foundation.kill(process.processIdentifier, sig) }
    }

    func kill() {
        if process.isRunning { process.terminate(); Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

extension Sandbox {
    /// Waits until `condition` holds, up to `seconds`. It is checked at once, then again after
    /// every change to a file in this sandbox (the processes' stdout, stderr, ledgers and ready
    /// files all live here; inotify reports each write), and at least every 250 ms for
    /// conditions that no file here reflects (a broker's status, a process in /proc). Checks are
    /// at least 10 ms apart, so a process writing fast does not turn this into a busy loop that
    /// re-reads its output.
    func eventually(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let limit = Date().addingTimeInterval(seconds)
        let watch = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        defer { if watch >= 0 { close(watch) } }
        if watch >= 0 {
            _ = inotify_add_watch(watch, directory, UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB))
        }
        var events = [UInt8](repeating: 0, count: 4096)
        while true {
            let checked = Date()
            if try condition() { return true }
            let left = limit.timeIntervalSinceNow
            if left <= 0 { return false }
            var ready = pollfd(fd: watch, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, Int32(min(left, 0.25) * 1000) + 1)
            let early = 0.01 - Date().timeIntervalSince(checked)
            if early > 0 { _ = poll(nil, 0, Int32(early * 1000) + 1) }
            if watch >= 0 { while events.withUnsafeMutableBytes({ read(watch, $0.baseAddress, $0.count) }) > 0 {} }
        }
    }
}
