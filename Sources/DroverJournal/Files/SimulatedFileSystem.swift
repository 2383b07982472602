import Foundation

/// A filesystem in memory that remembers what was synced, for tests: ``crash(keepingUnsynced:tornBytes:)``
/// throws away what a power cut would, so recovery can be checked against every cut point.
///
/// The model: each file has the contents its last `sync` made durable, and the changes since
/// (writes, size changes), numbered in the order they were made across all files. A directory's
/// entries (files created, removed, renamed) become durable on `syncDirectory`. A crash keeps
/// the durable state plus, optionally, a prefix of the unsynced changes in order, the last one
/// torn (only its first bytes kept), as a disk that writes in order would leave it.
public final class SimulatedFileSystem: JournalFileSystem, @unchecked Sendable {
    final class Node {
        var data: [UInt8] = []
        var durable: [UInt8] = []
        /// Changes since the last sync, with their global order.
        var unsynced: [(order: Int, change: Change)] = []
    }

    enum Change {
        case write(offset: Int, bytes: [UInt8])
        case resize(Int)
    }

    private let lock = NSLock()
    private var names: [String: Node] = [:]
    private var durableNames: [String: Node] = [:]
    private var directories: Set<String> = []
    private var nextOrder = 0
    /// Set to make the next call of this kind fail with this errno (for tests of failures).
    public var failNext: (operation: String, code: Int32)?

    public init() {}

    /// How many changes have not been synced (the cut points a crash can choose among).
    public var unsyncedChanges: Int {
        lock.withLock { allUnsynced().count }
    }

    private func allUnsynced() -> [Int] {
        var seen: Set<ObjectIdentifier> = []
        var orders: [Int] = []
        for node in names.values where seen.insert(ObjectIdentifier(node)).inserted { orders += node.unsynced.map(\.order) }
        return orders.sorted()
    }

    /// A power cut: files keep what was synced plus the first `keepingUnsynced` unsynced
    /// changes (in the order made), and `tornBytes` of the one after (when it is a write).
    /// Directory entries go back to what was last synced.
    /// `keepingDirectory`: entries made or removed since the last directory sync stay as they
    /// are (a process killed, not a machine: the kernel still has them).
    public func crash(keepingUnsynced kept: Int = 0, tornBytes: Int = 0, keepingDirectory: Bool = false) {
        lock.withLock {
            let orders = allUnsynced()
            let cut = kept < orders.count ? orders[kept] : Int.max
            var seen: Set<ObjectIdentifier> = []
            for node in Array(names.values) + Array(durableNames.values) where seen.insert(ObjectIdentifier(node)).inserted {
                var data = node.durable
                for (order, change) in node.unsynced where order <= cut {
                    switch change {
                    case .write(let offset, var bytes):
                        if order == cut { bytes = Array(bytes.prefix(tornBytes)) }
                        apply(&data, offset: offset, bytes)
                    case .resize(let length):
                        if order < cut { resize(&data, length) }
                    }
                }
                node.data = data
                node.durable = data
                node.unsynced = []
            }
            if keepingDirectory { durableNames = names } else { names = durableNames }
        }
    }

    /// The current contents of `path` (for tests that damage a journal on purpose).
    public func contents(_ path: String) -> [UInt8]? { lock.withLock { names[path]?.data } }

    /// Replaces the contents of `path`, durably (damage done at rest).
    public func setContents(_ path: String, _ bytes: [UInt8]) {
        lock.withLock {
            guard let node = names[path] else { return }
            node.data = bytes
            node.durable = bytes
            node.unsynced = []
        }
    }

    private func apply(_ data: inout [UInt8], offset: Int, _ bytes: [UInt8]) {
        if data.count < offset + bytes.count { data += [UInt8](repeating: 0, count: offset + bytes.count - data.count) }
        data.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }

    private func resize(_ data: inout [UInt8], _ length: Int) {
        if data.count < length { data += [UInt8](repeating: 0, count: length - data.count) } else { data.removeLast(data.count - length) }
    }

    private func locked<T>(_ body: () throws(JournalError) -> T) throws(JournalError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    private func failIfAsked(_ operation: String, _ path: String) throws(JournalError) {
        if let fail = failNext, fail.operation == operation {
            failNext = nil
            throw JournalError(operation, path, code: fail.code, String(cString: strerror(fail.code)))
        }
    }

    private func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    // MARK: JournalFileSystem

    public func makeDirectory(_ path: String) throws(JournalError) {
        lock.withLock { _ = directories.insert(path) }
    }

    public func list(_ path: String) throws(JournalError) -> [String] {
        lock.withLock {
            names.keys.filter { parent($0) == path }.map { String($0.dropFirst(path.count + 1)) }
        }
    }

    public func open(_ path: String, create: Bool) throws(JournalError) -> any JournalFile {
        try locked { () throws(JournalError) -> any JournalFile in
            try failIfAsked("open", path)
            if let node = names[path] { return SimulatedFile(system: self, node: node, path: path) }
            guard create else { throw JournalError("open", path, code: ENOENT, "No such file or directory") }
            let node = Node()
            names[path] = node
            return SimulatedFile(system: self, node: node, path: path)
        }
    }

    public func remove(_ path: String) throws(JournalError) {
        lock.withLock { _ = names.removeValue(forKey: path) }
    }

    public func rename(_ from: String, to: String) throws(JournalError) {
        lock.withLock {
            if let node = names.removeValue(forKey: from) { names[to] = node }
        }
    }

    public func syncDirectory(_ path: String) throws(JournalError) {
        try locked { () throws(JournalError) in
            try failIfAsked("syncDirectory", path)
            durableNames = durableNames.filter { parent($0.key) != path }
            for (name, node) in names where parent(name) == path { durableNames[name] = node }
        }
    }

    // MARK: File calls

    fileprivate func write(_ node: Node, _ path: String, _ bytes: [UInt8], at offset: Int) throws(JournalError) {
        try locked { () throws(JournalError) in
            try failIfAsked("write", path)
            apply(&node.data, offset: offset, bytes)
            node.unsynced.append((nextOrder, .write(offset: offset, bytes: bytes)))
            nextOrder += 1
        }
    }

    fileprivate func resize(_ node: Node, _ path: String, _ length: Int, _ operation: String) throws(JournalError) {
        try locked { () throws(JournalError) in
            try failIfAsked(operation, path)
            resize(&node.data, length)
            node.unsynced.append((nextOrder, .resize(length)))
            nextOrder += 1
        }
    }

    fileprivate func sync(_ node: Node, _ path: String) throws(JournalError) {
        try locked { () throws(JournalError) in
            try failIfAsked("sync", path)
            node.durable = node.data
            node.unsynced = []
        }
    }

    fileprivate func read(_ node: Node, at offset: Int, count: Int) -> [UInt8] {
        lock.withLock {
            guard offset < node.data.count else { return [] }
            return Array(node.data[offset..<min(node.data.count, offset + count)])
        }
    }

    fileprivate func size(_ node: Node) -> Int { lock.withLock { node.data.count } }
}

final class SimulatedFile: JournalFile, @unchecked Sendable {
    let system: SimulatedFileSystem
    let node: SimulatedFileSystem.Node
    let path: String

    init(system: SimulatedFileSystem, node: SimulatedFileSystem.Node, path: String) {
        self.system = system
        self.node = node
        self.path = path
    }

    func write(_ bytes: [UInt8], at offset: Int) throws(JournalError) { try system.write(node, path, bytes, at: offset) }
    func read(at offset: Int, count: Int) throws(JournalError) -> [UInt8] { system.read(node, at: offset, count: count) }
    func sync() throws(JournalError) { try system.sync(node, path) }
    func truncate(to length: Int) throws(JournalError) { try system.resize(node, path, length, "truncate") }
    func allocate(_ length: Int) throws(JournalError) {
        if system.size(node) < length { try system.resize(node, path, length, "allocate") }
    }
    func size() throws(JournalError) -> Int { system.size(node) }
}
