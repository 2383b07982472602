import CDroverShims
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A command started with pipes for its stdin, stdout and stderr, in a process group of its
/// own (so that stopping it stops everything it started), inheriting no descriptor of ours but
/// those three. `--exec` starts one per item; `--serve` keeps one per handler thread.
struct Subprocess {
    let pid: pid_t
    /// Our ends of its pipes; -1 once closed.
    var stdin: Int32
    var stdout: Int32
    var stderr: Int32

    /// Starts `argv` with `environment` added to ours. Throws ``HandlerFailure`` when the pipes
    /// or the process cannot be made.
    static func spawn(argv: [String], environment: [String: String]) throws -> Subprocess {
        var stdinPipe: [Int32] = [-1, -1], stdoutPipe: [Int32] = [-1, -1], stderrPipe: [Int32] = [-1, -1]
        guard drover_pipe_cloexec(&stdinPipe, 0) == 0, drover_pipe_cloexec(&stdoutPipe, 0) == 0,
              drover_pipe_cloexec(&stderrPipe, 0) == 0 else {
            let reason = String(cString: strerror(errno))
            for fd in stdinPipe + stdoutPipe + stderrPipe where fd >= 0 { close(fd) }
            throw HandlerFailure("cannot create pipes: \(reason)")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        // The command gets stdin, stdout and stderr only: no socket of ours, and no descriptor
        // this worker inherited (a supervisor's pipe held open by an orphaned grandchild makes
        // the supervisor think the worker is still alive).
        drover_spawn_close_from(&actions, 3)

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArgs, cEnv)
        close(stdinPipe[0]); close(stdoutPipe[1]); close(stderrPipe[1])
        guard rc == 0 else {
            close(stdinPipe[1]); close(stdoutPipe[0]); close(stderrPipe[0])
            throw HandlerFailure("cannot start \(argv[0]): \(String(cString: strerror(rc)))")
        }
        return Subprocess(pid: pid, stdin: stdinPipe[1], stdout: stdoutPipe[0], stderr: stderrPipe[0])
    }

    /// Kills its whole process group.
    func kill() { _ = Glibc.kill(-pid, SIGKILL) }

    /// Waits for it to exit; its exit status, or minus the signal that killed it.
    func wait() -> Int32 {
        if let code = reaped.code { return code }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Self.code(status)
    }

    /// Its exit status if it has exited (reaping it; ``wait()`` then returns the same status),
    /// or `nil` while it runs.
    func exited() -> Int32? {
        if let code = reaped.code { return code }
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        reaped.code = Self.code(status)
        return reaped.code
    }

    /// Waits for it to exit until `deadline` (monotonic ms): its status, or `nil` if it still
    /// runs then.
    func wait(until deadline: Int64) -> Int32? {
        while true {
            if let code = exited() { return code }
            if monotonicMilliseconds() >= deadline { return nil }
            pause(milliseconds: 10)
        }
    }

    /// Where a reaped status is kept: a process can be waited for only once.
    final class Reaped: @unchecked Sendable {
        var code: Int32? = nil
    }
    let reaped = Reaped()

    /// WIFEXITED / WEXITSTATUS are macros Swift cannot call.
    private static func code(_ status: Int32) -> Int32 {
        let termSignal = status & 0x7f
        return termSignal == 0 ? (status >> 8) & 0xff : -termSignal
    }

    /// How a status from ``wait()`` reads in a message.
    static func describe(_ code: Int32) -> String {
        code >= 0 ? "exited with status \(code)" : "was killed by signal \(-code)"
    }
}
