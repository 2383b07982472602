#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An exclusive lock on a data directory (`flock` on its `lock` file), held while the broker
/// runs, so that a second broker on the same directory refuses to start instead of writing
/// over the first one's journal. The kernel drops it when the process ends, however it ends.
public final class DataDirectoryLock: Sendable {
    private let fd: Int32

    /// Why the lock could not be taken.
    public enum Problem: Error, Sendable, CustomStringConvertible {
        /// Another process holds it; its pid when it wrote one.
        case held(path: String, pid: Int32?)
        case system(JournalError)

        public var description: String {
            switch self {
            case .held(let path, let pid):
                "another broker\(pid.map { " (pid \($0))" } ?? "") is using this data directory (\(path) is locked); "
                    + "stop it first, or give this one its own --data-dir"
            case .system(let error): error.description
            }
        }
    }

    /// Takes the lock on `directory`, writing this process's pid into the lock file.
    public init(directory: String) throws(Problem) {
        let path = directory + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system(.system("open", path)) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
            close(fd)
            if code == EWOULDBLOCK {
                let text = n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : ""
                throw .held(path: path, pid: Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)))
            }
            errno = code
            throw .system(.system("lock", path))
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd = fd
    }

    deinit { close(fd) }
}
