import Foundation
import Testing

/// The deployment files (`deploy/`, `docker-compose.yml`, `docs/DEPLOY.md`) cannot be run on
/// these machines (no container engine, no cluster, no systemd as init), so this checks that
/// they name only real things: every `drover` subcommand and flag they use exists, every
/// `DROVER_*` variable is one `drover --help` lists, and every Drover port is a default one.
/// `scripts/check-deploy` (run by CI) validates their syntax with docker-compose and systemd.
@Suite("Deployment files name only real subcommands, flags, variables and ports")
struct DeployFilesTests {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" && !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        return url
    }()

    /// Variables `drover worker --exec` sets for its command; not flags.
    static let handlerVariables: Set<String> = ["DROVER_ITEM_ID", "DROVER_ATTEMPT", "DROVER_QUEUE", "DROVER_WORKER"]

    static func files() throws -> [(name: String, text: String)] {
        let deploy = root.appendingPathComponent("deploy").path
        var paths = ["docker-compose.yml", "docs/DEPLOY.md"]
        for path in try FileManager.default.subpathsOfDirectory(atPath: deploy).sorted() {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(deploy)/\(path)", isDirectory: &isDirectory), !isDirectory.boolValue {
                paths.append("deploy/\(path)")
            }
        }
        return try paths.map { ($0, try String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)) }
    }

    /// Every match of `pattern` in `text`, in order.
    static func matches(of pattern: String, in text: String) throws -> [String] {
        let ns = text as NSString
        return try NSRegularExpression(pattern: pattern)
            .matches(in: text, range: NSRange(location: 0, length: ns.length))
            .map { ns.substring(with: $0.range) }
    }

    /// `drover SUBCOMMAND --flag …` uses in `text`, with YAML/JSON array punctuation removed, so
    /// `["drover", "status", "--broker", …]` reads as a command line too.
    static func commandLines(in text: String) -> [[String]] {
        var lines: [[String]] = []
        for raw in text.split(separator: "\n") {
            let plain = raw.map { "[],\"'`{}".contains($0) ? " " : $0 }
            let words = String(plain).split(separator: " ").map(String.init)
            for (index, word) in words.enumerated() where word == "drover" || word.hasSuffix("/drover") {
                let rest = Array(words[(index + 1)...])
                if let sub = rest.first, sub.range(of: "^[a-z][a-z-]*$", options: .regularExpression) != nil { lines.append(rest) }
            }
        }
        return lines
    }

    @Test("every drover subcommand and flag the deployment files use exists")
    func subcommandsAndFlags() throws {
        let sandbox = try Sandbox("deploy-flags")
        defer { sandbox.tearDown() }
        var helps: [String: String] = [:]
        var checked = 0
        for file in try Self.files() {
            for words in Self.commandLines(in: file.text) {
                var command = [words[0]]
                if words[0] == "dlq", words.count > 1 { command.append(words[1]) }
                let key = command.joined(separator: " ")
                if helps[key] == nil {
                    let help = try sandbox.run(command + ["--help"])
                    helps[key] = help.status == 0 ? help.stdout : ""
                }
                let help = helps[key]!
                #expect(!help.isEmpty, "\(file.name): `drover \(key)` is not a drover subcommand")
                for flag in words.dropFirst(command.count) where flag.hasPrefix("--") {
                    let name = String(flag.split(separator: "=")[0])
                    #expect(help.contains("  \(name) ") || help.contains("  \(name)\n") || help.contains("  \(name)/"),
                            "\(file.name): `drover \(key)` has no flag \(name)")
                    checked += 1
                }
            }
        }
        #expect(checked >= 15, "the files were read (\(checked) flags checked)")
    }

    @Test("every DROVER_ variable the deployment files set is one drover --help lists")
    func environmentVariables() throws {
        let sandbox = try Sandbox("deploy-env")
        defer { sandbox.tearDown() }
        let help = try sandbox.run(["--help"]).stdout
        var seen: Set<String> = []
        for file in try Self.files() {
            for name in try Self.matches(of: "DROVER_[A-Z_]+", in: file.text) {
                seen.insert(name)
                guard !Self.handlerVariables.contains(name) else { continue }
                #expect(help.contains(" \(name)"), "\(file.name): \(name) is not a variable drover reads (see drover --help)")
            }
        }
        #expect(seen.isSuperset(of: ["DROVER_BROKER", "DROVER_CONTROL", "DROVER_BIND", "DROVER_PUBLISH", "DROVER_EXEC"]))
    }

    @Test("the ports in the deployment files are the documented defaults")
    func ports() throws {
        let sandbox = try Sandbox("deploy-ports")
        defer { sandbox.tearDown() }
        #expect(try sandbox.run(["broker", "--help"]).stdout.contains("(default: tcp://*:5555)"))
        let controller = try sandbox.run(["controller", "--help"]).stdout
        #expect(controller.contains("(default: tcp://*:5556)") && controller.contains("(default: tcp://*:5557)"))
        for file in try Self.files() {
            for port in try Self.matches(of: "\\b55[0-9]{2}\\b", in: file.text) {
                #expect(["5555", "5556", "5557"].contains(port), "\(file.name): port \(port) is not one of Drover's (5555, 5556, 5557)")
            }
        }
    }

    @Test("the worker's grace period outlasts its drain deadline everywhere it is stopped")
    func gracePeriods() throws {
        let files = Dictionary(uniqueKeysWithValues: try Self.files().map { ($0.name, $0.text) })
        func number(after key: String, in name: String) -> Double? {
            guard let text = files[name], let range = text.range(of: key) else { return nil }
            return Double(text[range.upperBound...].prefix { $0.isNumber || $0 == "." })
        }
        let drain = try #require(number(after: "DROVER_DRAIN_DEADLINE: \"", in: "docker-compose.yml"))
        let compose = try #require(files["docker-compose.yml"]?.components(separatedBy: "worker:").last)
        let composeGrace = try #require(compose.range(of: "stop_grace_period: ").map { Double(compose[$0.upperBound...].prefix { $0.isNumber }) ?? 0 })
        #expect(composeGrace > drain)
        #expect(try #require(number(after: "terminationGracePeriodSeconds: ", in: "deploy/kubernetes/worker.yaml")) > 30)
        #expect(try #require(number(after: "TimeoutStopSec=", in: "deploy/systemd/drover-worker@.service")) > 30)
    }
}
