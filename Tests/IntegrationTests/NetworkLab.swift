import Foundation
import Testing

/// Hosts on their own network stacks, for multi-host tests: each host is a network namespace
/// with one address (10.77.N.2), joined to a router namespace (10.77.N.1 on its side of each
/// link) by a veth pair. The router forwards between them, and can cut one host off with a
/// blackhole route, so that its packets vanish silently as in a real partition.
///
/// Every namespace's name carries this process's id; `tearDown()` deletes them all (which
/// removes their links too) and is safe to call twice. A lab left behind by a test process that
/// was killed is removed by the next lab, and only when that process is gone. Needs root and
/// iproute2; without them `init` throws, and the test fails saying so.
final class NetworkLab: @unchecked Sendable {
    /// The `ip` tool (iproute2).
    static let ip: String = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/ip"
    static let prefix = "drvlab"

    struct Host {
        var name: String
        var namespace: String
        var address: String
        var link: Int
    }

    let router: String
    private(set) var hosts: [String: Host] = [:]
    private var namespaces: [String] = []
    private let lock = NSLock()

    init(hosts names: [String]) throws {
        Self.removeAbandonedLabs()
        let tag = "\(Self.prefix)-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        router = "\(tag)-router"
        do {
            try addNamespace(router)
            try Self.run(["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            for (index, name) in names.enumerated() {
                let link = index + 1
                let host = Host(name: name, namespace: "\(tag)-\(name)", address: "10.77.\(link).2", link: link)
                try addNamespace(host.namespace)
                // The pair is made inside the router namespace and its far end moved straight
                // into the host's, so nothing appears in the machine's own namespace.
                try Self.run(["-n", router, "link", "add", "r\(link)", "type", "veth", "peer", "name", "eth0", "netns", host.namespace])
                try Self.run(["-n", router, "addr", "add", "10.77.\(link).1/24", "dev", "r\(link)"])
                try Self.run(["-n", router, "link", "set", "r\(link)", "up"])
                try Self.run(["-n", host.namespace, "addr", "add", "\(host.address)/24", "dev", "eth0"])
                try Self.run(["-n", host.namespace, "link", "set", "eth0", "up"])
                try Self.run(["-n", host.namespace, "route", "add", "default", "via", "10.77.\(link).1"])
                hosts[name] = host
            }
        } catch {
            tearDown()
            throw error
        }
    }

    subscript(name: String) -> Host { hosts[name]! }

    /// Cuts `host` off at the router: packets to it are dropped without a word.
    func partition(_ host: String) throws {
        try Self.run(["-n", router, "route", "add", "blackhole", "\(self[host].address)/32"])
    }

    /// Undoes ``partition(_:)``.
    func heal(_ host: String) throws {
        try Self.run(["-n", router, "route", "del", "blackhole", "\(self[host].address)/32"])
    }

    /// Deletes every namespace this lab made.
    func tearDown() {
        let made = lock.withLock { () -> [String] in
            defer { namespaces.removeAll() }
            return namespaces
        }
        for namespace in made.reversed() { try? Self.run(["netns", "delete", namespace]) }
    }

    private func addNamespace(_ name: String) throws {
        try Self.run(["netns", "add", name])
        lock.withLock { namespaces.append(name) }
        try Self.run(["-n", name, "link", "set", "lo", "up"])
    }

    /// Removes labs whose test process no longer exists (it was killed before its tear-down).
    private static func removeAbandonedLabs() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns") else { return }
        for name in names where name.hasPrefix(prefix + "-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 2, let pid = Int32(parts[1]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? run(["netns", "delete", name])
        }
    }

    /// Runs `ip ARGUMENTS…`; throws with its error output when it fails.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw HarnessError("cannot run \(ip) (install iproute2): \(error)")
        }
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let hint = getuid() == 0 ? "" : " (network namespaces need root)"
            throw HarnessError("ip \(arguments.joined(separator: " ")) failed\(hint): \(String(decoding: err, as: UTF8.self))")
        }
        return String(decoding: out, as: UTF8.self)
    }
}
