import ArgumentParser
import Foundation

/// Every flag of every subcommand may also come from an environment variable, so that
/// containers and service units configure `drover` without shell wrappers: `DROVER_` and the
/// flag's name in capitals with `-` as `_` (`--broker` → `DROVER_BROKER`, `--max-item-size` →
/// `DROVER_MAX_ITEM_SIZE`). A flag given on the command line wins. A switch (`--wait`) is on
/// for `1`, `true` or `yes` and off for `0`, `false`, `no` or empty.
///
/// How: before ArgumentParser sees the arguments, the subcommand's flags are read from its own
/// help screen (so this list cannot drift from the real flags) and each one missing from the
/// command line but present in the environment is inserted after the subcommand's name.
enum EnvironmentDefaults {
    static let prefix = "DROVER_"

    /// One flag of a subcommand.
    struct Flag: Equatable {
        /// `--max-item-size`.
        var name: String
        /// Whether it takes a value (`--broker <broker>`) or is a switch (`--wait`).
        var takesValue: Bool
        /// A switch's "off" form, when it has one (`--no-wait`).
        var inversion: String? = nil

        var variable: String { EnvironmentDefaults.variable(for: name) }
    }

    /// Why an environment variable could not be used.
    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    /// `--max-item-size` → `DROVER_MAX_ITEM_SIZE`.
    static func variable(for flag: String) -> String {
        prefix + flag.drop(while: { $0 == "-" }).uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The visible flags of `command`, as its help screen lists them (`--help` and `--version`
    /// left out).
    static func flags(of command: ParsableCommand.Type) -> [Flag] {
        let help = DroverTool.helpMessage(for: command, includeHidden: false, columns: 10_000)
        var flags: [Flag] = []
        var inOptions = false
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("OPTIONS:") { inOptions = true; continue }
            if !line.hasPrefix(" ") && !line.isEmpty { inOptions = false }
            guard inOptions else { continue }
            // "  --broker <broker>   Help text", or "  -h, --help   Show help information."
            let words = line.split(separator: " ")
            guard let long = words.first(where: { $0.hasPrefix("--") }).map({ String($0.trimmingCharacters(in: CharacterSet(charactersIn: ","))) }),
                  long != "--help", long != "--version", line.trimmingCharacters(in: .whitespaces).hasPrefix("-") else { continue }
            let after = words.drop(while: { !$0.hasPrefix("--") }).dropFirst().first
            // A switch with an "off" form prints as "--wait/--no-wait".
            let forms = long.components(separatedBy: "/")
            let flag = Flag(name: forms[0], takesValue: after?.hasPrefix("<") == true, inversion: forms.count > 1 ? forms[1] : nil)
            if !flags.contains(flag) { flags.append(flag) }
        }
        return flags
    }

    /// The subcommand `arguments` name (after the executable's name), and how many leading
    /// arguments name it (`dlq list` is two).
    static func subcommand(in arguments: [String]) -> (command: ParsableCommand.Type, depth: Int)? {
        var current: ParsableCommand.Type = DroverTool.self
        var depth = 0
        while depth < arguments.count,
              let next = current.configuration.subcommands.first(where: { $0._commandName == arguments[depth] }) {
            current = next
            depth += 1
        }
        return depth == 0 ? nil : (current, depth)
    }

    /// `arguments` with the subcommand's flags that the environment sets and the command line
    /// does not.
    static func apply(to arguments: [String], environment: [String: String]) throws -> [String] {
        // Reading a subcommand's flags renders its help; skip that when nothing could match.
        guard environment.keys.contains(where: { $0.hasPrefix(prefix) }),
              let (command, depth) = subcommand(in: arguments) else { return arguments }
        let given = arguments[depth...].prefix { $0 != "--" }
        var added: [String] = []
        for flag in flags(of: command) {
            let names = [flag.name] + (flag.inversion.map { [$0] } ?? [])
            guard let value = environment[flag.variable],
                  !given.contains(where: { argument in names.contains { argument == $0 || argument.hasPrefix($0 + "=") } }) else { continue }
            if flag.takesValue {
                added += [flag.name, value]
            } else {
                switch value.lowercased() {
                case "1", "true", "yes": added.append(flag.name)
                case "0", "false", "no", "": if let off = flag.inversion { added.append(off) }
                default:
                    throw Problem(description: "\(flag.variable)=\(value): \(flag.name) is a switch; set 1, true or yes to turn it on, or 0, false or no to leave it off")
                }
            }
        }
        return Array(arguments[..<depth]) + added + Array(arguments[depth...])
    }

    /// Every variable, per subcommand, for `drover --help`.
    static func listing() -> String {
        let commands = DroverTool.configuration.subcommands.filter { $0.configuration.shouldDisplay }
        var lines: [String] = []
        func add(_ command: ParsableCommand.Type, name: String) {
            let variables = flags(of: command).map(\.variable)
            if !variables.isEmpty { lines.append("  \(name): " + variables.joined(separator: " ")) }
        }
        for command in commands {
            if command.configuration.subcommands.isEmpty {
                add(command, name: command._commandName)
            } else {
                for sub in command.configuration.subcommands { add(sub, name: "\(command._commandName) \(sub._commandName)") }
            }
        }
        return lines.joined(separator: "\n")
    }
}
