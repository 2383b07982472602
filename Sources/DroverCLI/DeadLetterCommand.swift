import DroverDispatch
import ArgumentParser
import Drover
import DroverProtocol
import Foundation
import ZeroMQ

struct DeadLetterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect and act on the broker's dead-letter store: items that used up their deliveries.",
        discussion: """
        Examples:
          drover dlq list --broker tcp://broker-host:5555
          drover dlq show --broker tcp://broker-host:5555 0f3c…e1
          drover dlq replay --broker tcp://broker-host:5555            (every dead item)
          drover dlq purge --broker tcp://broker-host:5555 0f3c…e1
        """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self]
    )

    /// Flags every `dlq` subcommand takes.
    struct Connection: ParsableArguments {
        @Option(help: "The broker.")
        var broker: String

        @Option(help: "Seconds to wait for an answer.")
        var timeout: Double = 5

        @Flag(help: "Print the broker's JSON answer as it is.")
        var json = false

        @OptionGroup var key: ClientKeyOption

        @Option(help: ArgumentHelp("The broker's public certificate (its NAME.pub), for a broker that uses keys (the dead-letter store needs an admin key).", valueName: "file"))
        var brokerKey: String?

        @OptionGroup var global: GlobalOptions

        func validate() throws {
            try validateEndpoint(broker, flag: "--broker", binding: false)
            _ = try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
        }

        func ask(_ request: DeadLetterRequest) throws -> String {
            _ = global.makeLogger(role: "dlq")
            return try ControlClient(endpoint: broker, role: "broker", timeoutSeconds: timeout, context: ZMQContext(),
                                     security: try key.security(serverKey: brokerKey, serverFlag: "--broker-key")).deadLetters(request)
        }
    }

    static func parseIDs(_ texts: [String]) throws -> [ItemID] {
        try texts.map { text in
            guard let id = ItemID(hex: text) else {
                throw ValidationError("\"\(text)\" is not an item id: ids are 32 hex digits, as `drover dlq list` prints them")
            }
            return id
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead items, oldest first, with their attempts and last error.",
            discussion: "Example:\n  drover dlq list --broker tcp://127.0.0.1:5555 --limit 20")

        @OptionGroup var connection: Connection

        @Option(help: "Show at most this many (0: all).")
        var limit: UInt32 = 100

        func run() throws {
            let answer = try connection.ask(.list(limit: limit))
            if connection.json { return writeOutput(answer) }
            let letters = try JSONDecoder().decode([DeadLetterView].self, from: Data(answer.utf8))
            if letters.isEmpty { return writeOutput("no dead items") }
            for letter in letters {
                writeOutput("\(letter.id)  queue=\(letter.queue)  attempts=\(letter.attempts)  failures=\(letter.failures)  bytes=\(letter.bytes)  age=\(letter.ageMilliseconds / 1000)s")
                writeOutput("    last error: \(letter.lastError)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one dead item, with its payload.",
            discussion: "Example:\n  drover dlq show --broker tcp://127.0.0.1:5555 0123456789abcdef0123456789abcdef")

        @OptionGroup var connection: Connection

        @Argument(help: "The item id, 32 hex digits.")
        var id: String

        func run() throws {
            let ids = try DeadLetterCommand.parseIDs([id])
            let answer = try connection.ask(.show(ids[0]))
            if connection.json { return writeOutput(answer) }
            guard let letter = try? JSONDecoder().decode(DeadLetterView.self, from: Data(answer.utf8)) else {
                throw CommandFailure("no dead item \(id) on \(connection.broker) (`drover dlq list` shows what is there)")
            }
            writeOutput("id:         \(letter.id)")
            writeOutput("queue:      \(letter.queue)")
            writeOutput("attempts:   \(letter.attempts) (\(letter.failures) failed)")
            writeOutput("last error: \(letter.lastError)")
            writeOutput("payload:    \(letter.payloadText ?? "(binary, base64) " + (letter.payloadBase64 ?? ""))")
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead items back on their queues with a fresh delivery cap (all of them without ids).",
            discussion: "Example:\n  drover dlq replay --broker tcp://127.0.0.1:5555")

        @OptionGroup var connection: Connection

        @Argument(help: "Item ids; none means every dead item.")
        var ids: [String] = []

        func run() throws {
            try report(connection, verb: "replayed", try connection.ask(.replay(try DeadLetterCommand.parseIDs(ids))))
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead items for good (all of them without ids).",
            discussion: "Example:\n  drover dlq purge --broker tcp://127.0.0.1:5555 0123456789abcdef0123456789abcdef")

        @OptionGroup var connection: Connection

        @Argument(help: "Item ids; none means every dead item.")
        var ids: [String] = []

        func run() throws {
            try report(connection, verb: "purged", try connection.ask(.purge(try DeadLetterCommand.parseIDs(ids))))
        }
    }
}

private func report(_ connection: DeadLetterCommand.Connection, verb: String, _ answer: String) throws {
    if connection.json { return writeOutput(answer) }
    let change = try JSONDecoder().decode(DeadLetterChange.self, from: Data(answer.utf8))
    writeOutput("\(verb) \(change.count) dead item\(change.count == 1 ? "" : "s")")
    if !change.unknown.isEmpty {
        throw CommandFailure("not in the dead-letter store: \(change.unknown.joined(separator: ", "))")
    }
}
