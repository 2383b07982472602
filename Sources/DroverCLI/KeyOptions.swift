import ArgumentParser
import Drover

/// `--key`: the secret certificate of a client of a broker or controller that uses keys.
struct ClientKeyOption: ParsableArguments {
    @Option(help: ArgumentHelp("This peer's secret certificate (NAME.key from drover keygen), for a broker or controller that uses keys; give the server's public certificate with it.", valueName: "file"))
    var key: String?

    /// The keys for a server whose public certificate is `serverKey` (given with `serverFlag`),
    /// or nil for plaintext; a clear error when only one half is given or a file is wrong.
    func security(serverKey: String?, serverFlag: String) throws -> ClientSecurity? {
        try clientSecurity(key: key, serverKey: serverKey, serverFlag: serverFlag)
    }
}

/// A client's keys from its `--key` and the server's public certificate, or nil for plaintext.
func clientSecurity(key: String?, serverKey: String?, serverFlag: String) throws -> ClientSecurity? {
        // An empty value (DROVER_KEY= in an env file) means none.
        switch (key.flatMap { $0.isEmpty ? nil : $0 }, serverKey.flatMap { $0.isEmpty ? nil : $0 }) {
        case (nil, nil):
            return nil
        case (nil, _?):
            throw ValidationError("\(serverFlag) needs --key too: this peer's own secret certificate (NAME.key from drover keygen)")
        case (_?, nil):
            throw ValidationError("--key needs \(serverFlag) too: the server's public certificate (its NAME.pub), so that this peer knows it talks to the real one")
        case let (key?, serverKey?):
            do {
                return try ClientSecurity.load(key: key, serverKey: serverKey, serverFlag: serverFlag)
            } catch {
                throw ValidationError(error.description)
            }
        }
}

/// `--key`, `--authorized-keys` and `--insecure` of a server (the broker, the controller).
struct ServerKeyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("This server's secret certificate (NAME.key from drover keygen). With --authorized-keys, every connection is encrypted and authenticated (CURVE), and each key may do only what its role allows.", valueName: "file"))
    var key: String?

    @Option(help: ArgumentHelp("The public keys admitted, with their roles: a directory of .pub files (drover keygen makes them), or a file of lines PUBLIC-KEY ROLE [NAME]. Read again on SIGHUP: a removed key is refused from then on.", valueName: "path"))
    var authorizedKeys: String?

    @Option(help: "Most connections open at once; past it new handshakes are refused, so that a peer opening thousands of connections cannot exhaust this server.")
    var maxConnections = 10_000

    @Flag(help: "Without keys, admit peers from other hosts too (by default only loopback): anyone who can reach the port may then submit items, take work and read results. The insecure choice; logged at start.")
    var insecure = false

    /// The security these flags describe; a clear error for a contradiction or a bad file.
    func security() throws -> ServerSecurity {
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        var security = try keyedSecurity()
        security.maxConnections = maxConnections
        return security
    }

    private func keyedSecurity() throws -> ServerSecurity {
        switch (key.flatMap { $0.isEmpty ? nil : $0 }, authorizedKeys.flatMap { $0.isEmpty ? nil : $0 }) {
        case (nil, nil):
            return ServerSecurity(insecure: insecure)
        case (nil, _?):
            throw ValidationError("--authorized-keys needs --key too: this server's own secret certificate (drover keygen NAME --role broker)")
        case (_?, nil):
            throw ValidationError("--key needs --authorized-keys too: the public keys this server admits (a directory of .pub files)")
        case let (key?, path?):
            if insecure { throw ValidationError("--insecure and --key contradict each other: with keys only authorized peers connect; drop --insecure") }
            do {
                let certificate = try Certificate.load(key)
                guard certificate.secretKey != nil else {
                    throw ValidationError("--key \(key) is a public certificate; give this server's secret one (NAME.key)")
                }
                return ServerSecurity(certificate: certificate, authorizedKeys: try AuthorizedKeys(path: path))
            } catch let problem as Certificate.Problem {
                throw ValidationError(problem.description)
            }
        }
    }
}
