import Foundation

/// Hosts on their own network stacks, for multi-host tests: each host is a network namespace
/// with one address, joined to a router namespace by a veth pair. Everything it creates has a
/// name with this process's id, and `tearDown()` removes all of it (also when a test fails).
final class NetworkLab: @unchecked Sendable {
    /// The `ip` tool (iproute2).
    static let ip: String = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/ip"
}
