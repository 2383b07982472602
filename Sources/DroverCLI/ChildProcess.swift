import Foundation

/// A `drover` child process started by `drover up`, in its own process group so that Ctrl-C
/// reaches only `drover up`, which then shuts the fleet down in order.
final class ChildProcess {
    let role: String
    let pid: pid_t
    private(set) var exitStatus: Int32? = nil

    /// Set in a child's environment to its parent's pid (see `DroverTool.main`).
    static let parentVariable = "DROVER_PARENT_PID"

    /// Starts this same executable with `arguments`.
    /// Starts this executable with `arguments`; `discardingOutput` sends its stdout (an `--echo`
    /// worker's printed items) to /dev/null.
    init(role: String, arguments: [String], discardingOutput: Bool = false) throws {
        self.role = role
        let executable = Self.ownExecutable()
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // The child learns its parent's pid, and ends (SIGTERM: it drains) if the parent dies
        // without stopping it, e.g. a Ctrl-C on `drover bench`.
        var environment = ProcessInfo.processInfo.environment.filter { $0.key != Self.parentVariable }
        environment[Self.parentVariable] = String(getpid())
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if discardingOutput { posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0) }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw CommandFailure("cannot start \(executable) \(role): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// Reaps the child if it has exited; returns its status (exit code, or 128 + signal).
    @discardableResult
    func poll() -> Int32? {
        if exitStatus != nil { return exitStatus }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            let signal = status & 0x7f
            exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
        return exitStatus
    }

    var running: Bool { poll() == nil }

    func signal(_ sig: Int32) {
        if running { kill(pid, sig) }
    }

    /// Sends SIGTERM and waits up to `seconds`, then SIGKILL.
    func stop(within seconds: Double) {
        signal(SIGTERM)
        let limit = Date().addingTimeInterval(seconds)
        while running && Date() < limit { usleep(20_000) }
        if running {
            kill(pid, SIGKILL)
            while running { usleep(5_000) }
        }
    }

    static func ownExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }
}

/// Waits until `path` exists (a child's ready file) or `child` dies or `seconds` pass.
func waitForReadyFile(_ path: String, child: ChildProcess, seconds: Double) throws -> [String] {
    let limit = Date().addingTimeInterval(seconds)
    while Date() < limit {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            return text.split(separator: "\n").map(String.init)
        }
        if let status = child.poll() {
            throw CommandFailure("the \(child.role) exited with status \(status) before it was ready (see its log above)")
        }
        usleep(20_000)
    }
    throw CommandFailure("the \(child.role) was not ready within \(Int(seconds)) s")
}
