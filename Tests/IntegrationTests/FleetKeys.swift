import Foundation

/// A fleet's keys, made with `drover keygen` in a sandbox: one per role (broker, controller,
/// producer, worker, admin), the public ones of every peer but the broker in `authorized`, and
/// the flags each role takes.
struct FleetKeys {
    let directory: String
    var authorized: String { "\(directory)/authorized" }

    /// Makes keys NAME.key/NAME.pub for each `names` entry (name: role) in `sandbox/keys`.
    init(_ sandbox: Sandbox, extra: [String: String] = [:]) throws {
        directory = sandbox.path("keys")
        try FileManager.default.createDirectory(atPath: "\(directory)/authorized", withIntermediateDirectories: true)
        let roles = ["broker": "broker", "controller": "controller", "producer": "producer", "worker": "worker", "admin": "admin"]
            .merging(extra) { $1 }
        for (name, role) in roles {
            let made = try sandbox.run(["keygen", name, "--role", role, "--dir", directory])
            guard made.status == 0 else { throw HarnessError("drover keygen \(name) failed: \(made.stderr)") }
        }
        for name in ["controller", "producer", "worker", "admin"] {
            try FileManager.default.copyItem(atPath: "\(directory)/\(name).pub", toPath: "\(authorized)/\(name).pub")
        }
    }

    func secret(_ name: String) -> String { "\(directory)/\(name).key" }
    func pub(_ name: String) -> String { "\(directory)/\(name).pub" }

    /// `drover broker`'s flags.
    var broker: [String] { ["--key", secret("broker"), "--authorized-keys", authorized] }
    /// `drover controller`'s flags.
    var controller: [String] { ["--key", secret("controller"), "--authorized-keys", authorized, "--broker-key", pub("broker")] }
    /// A client's flags with key `name`, towards the broker (and the controller).
    func client(_ name: String, broker: Bool = true, controller: Bool = false) -> [String] {
        ["--key", secret(name)] + (broker ? ["--broker-key", pub("broker")] : []) + (controller ? ["--controller-key", pub("controller")] : [])
    }
}
