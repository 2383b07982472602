#if canImport(Glibc)
import Glibc
#endif
import CDroverShims

/// What the journal asks of a filesystem: the few calls it makes, so that a test double
/// (``SimulatedFileSystem``) can stand in for the disk and throw away whatever was not synced,
/// as a power cut would.
public protocol JournalFileSystem: AnyObject, Sendable {
    /// Creates `path` (and missing parents) as a directory if it does not exist.
    func makeDirectory(_ path: String) throws(JournalError)
    /// The names of the entries in directory `path`.
    func list(_ path: String) throws(JournalError) -> [String]
    /// Opens `path` for reading and writing; creates it (empty) when `create` and it is missing.
    func open(_ path: String, create: Bool) throws(JournalError) -> any JournalFile
    func remove(_ path: String) throws(JournalError)
    func rename(_ from: String, to: String) throws(JournalError)
    /// Makes the directory's entries durable: files created, renamed or removed in it.
    func syncDirectory(_ path: String) throws(JournalError)
}

/// An open file. Safe to use from two threads at once (the broker's loop writes, the journal
/// thread syncs); the descriptor closes when the last reference goes.
public protocol JournalFile: AnyObject, Sendable {
    var path: String { get }
    func write(_ bytes: [UInt8], at offset: Int) throws(JournalError)
    /// Up to `count` bytes from `offset` (fewer at the end of the file).
    func read(at offset: Int, count: Int) throws(JournalError) -> [UInt8]
    /// Makes every write so far durable (`fdatasync`).
    func sync() throws(JournalError)
    func truncate(to length: Int) throws(JournalError)
    /// Reserves `length` bytes from offset 0, reading as zeros, so that later writes need no
    /// new blocks (a full disk shows itself here, not in the middle of a segment).
    func allocate(_ length: Int) throws(JournalError)
    func size() throws(JournalError) -> Int
}

/// A failed filesystem call, with the path and the system's reason.
public struct JournalError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    /// The `errno` value, 0 when the problem is not the system's (damage found by a check).
    public var code: Int32
    public var detail: String

    public init(_ operation: String, _ path: String, code: Int32, _ detail: String) {
        self.operation = operation
        self.path = path
        self.code = code
        self.detail = detail
    }

    /// An error from the last system call's `errno`.
    static func system(_ operation: String, _ path: String) -> JournalError {
        let code = errno
        return JournalError(operation, path, code: code, String(cString: strerror(code)))
    }

    /// The disk is full (or the quota is used up).
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }

    public var description: String { "\(operation) \(path): \(detail)" }
}

/// The real filesystem.
public final class DiskFileSystem: JournalFileSystem {
    public init() {}

    public func makeDirectory(_ path: String) throws(JournalError) {
        var built = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            let parent = built.isEmpty ? "/" : built
            built += "/" + part
            if mkdir(built, 0o755) == 0 {
                // Its name in the parent must reach the disk too, or a power cut loses it all.
                try syncDirectory(parent)
            } else if errno != EEXIST {
                throw .system("create directory", built)
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw .system("create directory", path) }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw JournalError("create directory", path, code: ENOTDIR, "it exists and is not a directory")
        }
    }

    public func list(_ path: String) throws(JournalError) -> [String] {
        guard let dir = opendir(path) else { throw .system("list", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func open(_ path: String, create: Bool) throws(JournalError) -> any JournalFile {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0o644)
        guard fd >= 0 else { throw .system("open", path) }
        return DiskFile(fd: fd, path: path)
    }

    public func remove(_ path: String) throws(JournalError) {
        if unlink(path) != 0 && errno != ENOENT { throw .system("remove", path) }
    }

    public func rename(_ from: String, to: String) throws(JournalError) {
        if Glibc.rename(from, to) != 0 { throw .system("rename to \(to)", from) }
    }

    public func syncDirectory(_ path: String) throws(JournalError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("open directory", path) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw .system("fsync directory", path) }
    }
}

final class DiskFile: JournalFile {
    let fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8], at offset: Int) throws(JournalError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("write", path)
            }
            done += n
        }
    }

    func read(at offset: Int, count: Int) throws(JournalError) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = result.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("read", path)
            }
            if n == 0 { break }
            done += n
        }
        result.removeLast(count - done)
        return result
    }

    func sync() throws(JournalError) {
        if fdatasync(fd) != 0 { throw .system("fdatasync", path) }
    }

    func truncate(to length: Int) throws(JournalError) {
        if ftruncate(fd, off_t(length)) != 0 { throw .system("truncate", path) }
    }

    func allocate(_ length: Int) throws(JournalError) {
        if drover_fallocate(fd, Int64(length)) != 0 {
            // Filesystems without fallocate: grow the file instead (blocks come on write).
            if errno == EOPNOTSUPP {
                if ftruncate(fd, off_t(length)) != 0 { throw .system("allocate", path) }
                return
            }
            throw .system("allocate", path)
        }
    }

    func size() throws(JournalError) -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system("stat", path) }
        return Int(info.st_size)
    }
}
