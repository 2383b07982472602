import Foundation
import ZeroMQ

/// A CURVE certificate in the ZPL format that czmq (`zcert`) and pyzmq
/// (`zmq.auth.load_certificate`) read and write: a `metadata` section (here the peer's `role`
/// and `name`) and a `curve` section with the public key and, in the secret file only, the
/// secret key, each as 40 characters of Z85.
public struct Certificate: Sendable, Equatable {
    /// What a key may do in a fleet.
    public enum Role: String, Sendable, CaseIterable {
        /// Submits items, reads its own results and status.
        case producer
        /// Registers, takes work, reports outcomes.
        case worker
        /// Exits the fleet, replays and purges dead letters, reads status.
        case admin
        /// The controller's own key.
        case controller
        /// The broker's own key (its clients know its public half; as a client, it may only
        /// read status).
        case broker
    }

    public var publicKey: String
    /// Nil in a public certificate.
    public var secretKey: String?
    /// The `metadata` section, in file order.
    public var metadata: [(name: String, value: String)]

    public init(publicKey: String, secretKey: String?, metadata: [(name: String, value: String)]) {
        self.publicKey = publicKey
        self.secretKey = secretKey
        self.metadata = metadata
    }

    public static func == (a: Certificate, b: Certificate) -> Bool {
        a.publicKey == b.publicKey && a.secretKey == b.secretKey
            && a.metadata.map(\.name) == b.metadata.map(\.name) && a.metadata.map(\.value) == b.metadata.map(\.value)
    }

    /// A new key pair for a peer named `name` with `role`.
    public static func generate(name: String, role: Role) throws -> Certificate {
        let pair = try CurveKeyPair.generate()
        return Certificate(publicKey: pair.publicKey, secretKey: pair.secretKey, metadata: [("role", role.rawValue), ("name", name)])
    }

    /// The value of metadata `name`, if present.
    public subscript(metadata name: String) -> String? { metadata.first { $0.name == name }?.value }

    /// The role this certificate names, if it names a known one.
    public var role: Role? { self[metadata: "role"].flatMap(Role.init(rawValue:)) }

    /// Writes NAME.key (the secret certificate, mode 0600 from its creation) and NAME.pub in
    /// `directory`; returns their paths. Refuses to replace either unless `replacing`.
    @discardableResult
    public func write(name: String, in directory: String, replacing: Bool = false) throws -> (secret: String, public: String) {
        let secretPath = "\(directory)/\(name).key", publicPath = "\(directory)/\(name).pub"
        for path in [secretPath, publicPath] where !replacing && FileManager.default.fileExists(atPath: path) {
            throw Problem(description: "\(path) exists; keep it, or pass --force to replace it (a replaced key must be authorized again)")
        }
        try? FileManager.default.removeItem(atPath: secretPath)
        guard FileManager.default.createFile(atPath: secretPath, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw Problem(description: "cannot create \(secretPath)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: secretPath))
        try handle.write(contentsOf: Data(text().utf8))
        try handle.close()
        try Data(publicOnly.text().utf8).write(to: URL(fileURLWithPath: publicPath))
        return (secretPath, publicPath)
    }

    /// The public half alone.
    public var publicOnly: Certificate { Certificate(publicKey: publicKey, secretKey: nil, metadata: metadata) }

    /// The file's text: the secret certificate when it has a secret key, else the public one.
    public func text(generated date: Date = Date()) -> String {
        let day = ISO8601DateFormatter.string(from: date, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withFullDate])
        var lines = ["#   ****  Generated on \(day) by drover keygen  ****"]
        if secretKey != nil {
            lines += ["#   ZeroMQ CURVE **Secret** Certificate",
                      "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."]
        } else {
            lines += ["#   ZeroMQ CURVE Public Certificate",
                      "#   Exchange securely, or use a secure mechanism to verify the contents",
                      "#   of this file after exchange."]
        }
        lines += ["", "metadata"]
        for (name, value) in metadata { lines.append("    \(name) = \"\(Self.escaped(value))\"") }
        lines += ["curve", "    public-key = \"\(publicKey)\""]
        if let secretKey { lines.append("    secret-key = \"\(secretKey)\"") }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func escaped(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }

    /// Why a certificate could not be read.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Parses a certificate's text (ZPL: `#` comments, sections at column 0, `name = "value"`
    /// properties indented under them). `origin` names the file in errors.
    public static func parse(_ text: String, origin: String) throws(Problem) -> Certificate {
        var section = ""
        var publicKey: String?
        var secretKey: String?
        var metadata: [(name: String, value: String)] = []
        // "\r\n" is one Character in Swift: split on any newline.
        for (number, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            if !line.hasPrefix(" ") && !line.hasPrefix("\t") {
                section = trimmed
                continue
            }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw Problem(description: "\(origin) line \(number + 1): expected name = \"value\", got \"\(trimmed)\"")
            }
            let name = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
            var value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
                value = value.replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
            }
            switch (section, name) {
            case ("curve", "public-key"): publicKey = value
            case ("curve", "secret-key"): secretKey = value
            case ("metadata", _): metadata.append((name, value))
            default: break
            }
        }
        guard let publicKey else { throw Problem(description: "\(origin): no curve public-key; is it a ZeroMQ certificate (drover keygen makes them)?") }
        guard z85DecodeKey(publicKey) != nil else { throw Problem(description: "\(origin): the public-key is not 40 characters of Z85") }
        if let secretKey, z85DecodeKey(secretKey) == nil { throw Problem(description: "\(origin): the secret-key is not 40 characters of Z85") }
        return Certificate(publicKey: publicKey, secretKey: secretKey, metadata: metadata)
    }

    /// Reads a certificate file.
    public static func load(_ path: String) throws(Problem) -> Certificate {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Problem(description: "cannot read the certificate \(path) (make one with drover keygen)")
        }
        return try parse(text, origin: path)
    }
}
