import ArgumentParser
import Drover
import Foundation

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair for one peer: NAME.key (secret, mode 0600) and NAME.pub.",
        discussion: """
        The files are ZeroMQ certificates in the ZPL format that czmq and pyzmq (zmq.auth.load_certificate) read; their metadata carries the peer's role and name. Give NAME.key to that peer alone (a Kubernetes Secret, a systemd credential) and NAME.pub to whoever must know it.

        Examples:
          drover keygen broker --role broker --dir /etc/drover/keys
          drover keygen web-1 --role worker
          drover keygen ops --role admin
        """
    )

    @Argument(help: "The peer's name: the files are NAME.key and NAME.pub.")
    var name: String

    @Option(help: "What the key may do: producer, worker, admin, controller, or broker (the broker's own key).")
    var role: String

    @Option(help: "Directory to write the files in (it must exist).")
    var dir = "."

    @Flag(help: "Replace files that exist.")
    var force = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard Certificate.Role(rawValue: role) != nil else {
            throw ValidationError("--role must be one of \(Certificate.Role.allCases.map(\.rawValue).joined(separator: ", ")); got \"\(role)\"")
        }
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix("."), name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0 != "\"" }) else {
            throw ValidationError("NAME must be a plain file name (no '/', not starting with '.', no quotes); got \"\(name)\"")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("--dir \(dir) is not a directory; make it first")
        }
    }

    func run() throws {
        _ = global.makeLogger(role: "keygen")
        let certificate = try Certificate.generate(name: name, role: Certificate.Role(rawValue: role)!)
        let (secretPath, publicPath): (String, String)
        do {
            (secretPath, publicPath) = try certificate.write(name: name, in: dir, replacing: force)
        } catch let problem as Certificate.Problem {
            throw CommandFailure(problem.description)
        }
        writeOutput("\(secretPath)  secret: for \(name) alone (mode 0600)\n\(publicPath)  public: role \(role), key \(certificate.publicKey)")
    }
}
