import Foundation
import Synchronization
import ZeroMQ

/// The public keys a broker or controller admits, each with the role it may play and a name
/// for logs: `--authorized-keys PATH`.
///
/// PATH is a directory of `.pub` certificates (what `drover keygen` writes; their metadata
/// gives the role and name), or one file: a single certificate, or a list with one key per
/// line as `PUBLIC-KEY ROLE [NAME]` (`#` starts a comment line). ``reload()`` reads PATH again
/// (SIGHUP): a key that is gone is refused from then on, on new connections and on every
/// further message of those already open.
public final class AuthorizedKeys: Sendable {
    public struct Entry: Sendable, Equatable {
        public var role: Certificate.Role
        public var name: String
        /// The file it came from, for messages.
        public var origin: String
    }

    public let path: String
    private let keys: Mutex<[String: Entry]>

    /// Reads PATH; throws a ``Certificate/Problem`` that names the file and what is wrong.
    public init(path: String) throws(Certificate.Problem) {
        self.path = path
        keys = Mutex(try Self.read(path))
    }

    /// Keys and entries given directly (tests, and `drover up`'s key set).
    public init(entries: [String: Entry], path: String = "") {
        self.path = path
        keys = Mutex(entries)
    }

    /// The entry of a Z85 public key, or nil when it is not (or no longer) authorized.
    public func entry(forKey key: String) -> Entry? { keys.withLock { $0[key] } }

    public var count: Int { keys.withLock { $0.count } }

    /// Reads PATH again. On a problem the keys in force stay as they were.
    @discardableResult
    public func reload() throws(Certificate.Problem) -> (added: [Entry], removed: [Entry]) {
        let fresh = try Self.read(path)
        return keys.withLock { current in
            let added = fresh.filter { current[$0.key] == nil }.map(\.value)
            let removed = current.filter { fresh[$0.key] == nil }.map(\.value)
            current = fresh
            return (added, removed)
        }
    }

    static func read(_ path: String) throws(Certificate.Problem) -> [String: Entry] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Certificate.Problem(description: "--authorized-keys \(path) does not exist; give a directory of .pub files (drover keygen makes them) or a file listing keys")
        }
        var keys: [String: Entry] = [:]
        if isDirectory.boolValue {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".pub") }.sorted()
            for name in names {
                let file = "\(path)/\(name)"
                try add(try certificateEntry(Certificate.load(file), origin: file), to: &keys)
            }
            return keys
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Certificate.Problem(description: "cannot read --authorized-keys \(path)")
        }
        if text.contains("curve") && text.contains("public-key") {
            let certificate = try Certificate.parse(text, origin: path)
            try add(try certificateEntry(certificate, origin: path), to: &keys)
            return keys
        }
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let origin = "\(path):\(number + 1)"
            let words = trimmed.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard words.count >= 2, z85DecodeKey(words[0]) != nil else {
                throw Certificate.Problem(description: "\(origin): expected PUBLIC-KEY ROLE [NAME], with a 40-character Z85 key; got \"\(trimmed)\"")
            }
            guard let role = Certificate.Role(rawValue: words[1]) else {
                throw Certificate.Problem(description: "\(origin): unknown role \"\(words[1])\"; one of \(Certificate.Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let name = words.count > 2 ? words[2...].joined(separator: " ") : String(words[0].prefix(8))
            try add((words[0], Entry(role: role, name: name, origin: origin)), to: &keys)
        }
        return keys
    }

    private static func certificateEntry(_ certificate: Certificate, origin: String) throws(Certificate.Problem) -> (String, Entry) {
        guard let role = certificate.role else {
            throw Certificate.Problem(description: "\(origin): the certificate has no role in its metadata; make keys with drover keygen NAME --role ROLE")
        }
        return (certificate.publicKey, Entry(role: role, name: certificate[metadata: "name"] ?? String(certificate.publicKey.prefix(8)), origin: origin))
    }

    private static func add(_ pair: (String, Entry), to keys: inout [String: Entry]) throws(Certificate.Problem) {
        if let existing = keys[pair.0], existing.role != pair.1.role {
            throw Certificate.Problem(description: "\(pair.1.origin): the same key as \(existing.origin) with another role (\(pair.1.role.rawValue), not \(existing.role.rawValue)); one key has one role")
        }
        keys[pair.0] = pair.1
    }
}
