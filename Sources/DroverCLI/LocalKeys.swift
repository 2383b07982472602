import Drover
import Foundation

/// `drover up`'s key set: made on the first start in `directory` and kept, so that the
/// printed flags stay valid. The broker's, the controller's, one for every local worker, and
/// "you", an admin key for the person running the fleet; every public key but the broker's
/// is authorized (`authorized/`).
struct LocalKeys {
    let directory: String
    static let roles: [(name: String, role: Certificate.Role)] = [
        ("broker", .broker), ("controller", .controller), ("worker", .worker), ("you", .admin)]

    init(directory: String) throws {
        self.directory = directory
        let authorized = "\(directory)/authorized"
        try FileManager.default.createDirectory(atPath: authorized, withIntermediateDirectories: true)
        _ = chmod(directory, 0o700)
        for (name, role) in Self.roles where !FileManager.default.fileExists(atPath: path("\(name).key")) {
            try Certificate.generate(name: name, role: role).write(name: name, in: directory, replacing: true)
        }
        for (name, _) in Self.roles where name != "broker" {
            let copy = "\(authorized)/\(name).pub"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: path("\(name).pub"), toPath: copy)
        }
    }

    func path(_ file: String) -> String { "\(directory)/\(file)" }

    var broker: [String] { ["--key", path("broker.key"), "--authorized-keys", path("authorized")] }
    var controller: [String] { ["--key", path("controller.key"), "--authorized-keys", path("authorized"), "--broker-key", path("broker.pub")] }
    var worker: [String] { ["--key", path("worker.key"), "--broker-key", path("broker.pub"), "--controller-key", path("controller.pub")] }

    /// Your flags towards `server` ("broker" or "controller"), as one string to print.
    func you(server: String) -> String { "--key \(path("you.key")) --\(server)-key \(path("\(server).pub"))" }

    /// Shell lines that set your keys for every drover command.
    var environment: String {
        "export DROVER_KEY=\(quoted(path("you.key"))) DROVER_BROKER_KEY=\(quoted(path("broker.pub"))) DROVER_CONTROLLER_KEY=\(quoted(path("controller.pub")))"
    }

    private func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    func yourSecurity(towards server: String) throws -> ClientSecurity {
        try ClientSecurity.load(key: path("you.key"), serverKey: path("\(server).pub"), serverFlag: "--\(server)-key")
    }
}
