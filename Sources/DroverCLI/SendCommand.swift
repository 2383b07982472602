import ArgumentParser
import Drover
import DroverProtocol
import Foundation
import ZeroMQ

struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send items to the broker: from arguments, from --file (one per line), or from stdin (one per line).",
        discussion: """
        Returns once the broker has accepted every item; with --wait, once every item has an
        outcome, printing each result on stdout (errors on stderr) and exiting 1 if any failed.

        Examples:
          drover send --broker tcp://127.0.0.1:5555 --wait hello world
          seq 1 100000 | drover send --broker tcp://broker-host:5555 --queue numbers
          drover send --broker tcp://broker-host:5555 --file jobs.txt --wait > results.txt
        """
    )

    @Option(help: "The broker to send to.")
    var broker: String

    @Option(help: "The queue to send to.")
    var queue = "default"

    @Flag(help: "Wait for each item's outcome and print it.")
    var wait = false

    @Option(help: "Read items from this file, one per line.")
    var file: String?

    @Option(help: "Seconds to wait for the broker's first answer.")
    var timeout: Double = 5

    @Option(help: "Seconds each item may run once a worker starts it. Past it an --exec or --serve handler is killed and the item fails with \"timed out\", retried per the queue's policy; a worker's own --item-timeout applies too, the smaller winning. Default: no limit.")
    var itemTimeout: Double?

    @Option(help: "Seconds to keep reconnecting to a broker that went silent, before giving up.")
    var reconnectTimeout: Double = 60

    @Argument(help: "Items to send. Without items or --file, items are read from stdin.")
    var items: [String] = []

    @OptionGroup var key: ClientKeyOption

    @Option(help: ArgumentHelp("The broker's public certificate (its NAME.pub), for a broker that uses keys.", valueName: "file"))
    var brokerKey: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateEndpoint(broker, flag: "--broker", binding: false)
        if let problem = QueueName.problem(queue) { throw ValidationError("--queue: \(problem)") }
        if file != nil && !items.isEmpty { throw ValidationError("give items as arguments or with --file, not both") }
        guard timeout > 0, reconnectTimeout > 0 else { throw ValidationError("--timeout and --reconnect-timeout must be positive") }
        _ = try itemTimeoutMilliseconds(itemTimeout)
        _ = try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
    }

    func run() throws {
        let logger = global.makeLogger(role: "send")
        var options = ProducerOptions(broker: broker)
        options.queue = queue
        options.waitForResults = wait
        options.connectTimeoutSeconds = timeout
        options.reconnectTimeoutSeconds = reconnectTimeout
        options.itemTimeoutMilliseconds = try itemTimeoutMilliseconds(itemTimeout) ?? 0
        options.security = try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
        let producer = try Producer(options: options, context: ZMQContext(), logger: logger)
        defer { producer.close() }

        let showProgress = isatty(STDERR_FILENO) != 0
        // Results are gathered and written in large pieces (a write per result would cost more
        // than the rest of sending); what is gathered goes out at least every 100 ms.
        var results: [UInt8] = []
        func flushResults() {
            if !results.isEmpty { writeOutput(results) }
            results.removeAll(keepingCapacity: true)
        }
        let onOutcome = { (index: Int, outcome: ItemOutcome) in
            switch outcome.status {
            case .succeeded:
                results += outcome.payload
                if outcome.payload.last != UInt8(ascii: "\n") { results.append(UInt8(ascii: "\n")) }
                if results.count >= 64 * 1024 { flushResults() }
            case .failed:
                flushResults()  // keep results and failures in the order they arrived
                let text = String(decoding: outcome.payload, as: UTF8.self)
                writeError("\(showProgress ? "\r\u{1B}[K" : "")item \(index + 1) failed (attempt \(outcome.attempt)): \(text)\n")
            }
        }
        let onProgress = { (p: ProducerProgress) in
            flushResults()
            if showProgress { writeError("\r\u{1B}[Kread \(p.read), accepted \(p.accepted)\(wait ? ", finished \(p.finished)" : "")") }
        }

        let summary: ProducerSummary
        if !items.isEmpty {
            summary = try producer.send(items.map { Array($0.utf8) }, onOutcome: onOutcome, onProgress: onProgress)
        } else {
            var lines: LineSource
            if let file {
                lines = try LineSource(path: file)
            } else {
                if isatty(STDIN_FILENO) != 0 { writeError("reading items from stdin, one per line; end with Ctrl-D\n") }
                lines = LineSource()
            }
            // A line longer than the broker takes is refused as soon as it passes the limit,
            // not read whole first.
            lines.maxLineBytes = Int(try producer.connect().maxItemBytes)
            summary = try producer.send(from: &lines, onOutcome: onOutcome, onProgress: onProgress)
        }
        flushResults()
        if showProgress { writeError("\r\u{1B}[K") }

        for (index, reason) in summary.rejected.sorted(by: { $0.key < $1.key }).prefix(20) {
            writeError("item \(index + 1) was not accepted: \(reason)\n")
        }
        if summary.rejected.count > 20 { writeError("… and \(summary.rejected.count - 20) more items were not accepted\n") }
        var line = "\(summary.read) items: \(summary.accepted) accepted by \(broker) on queue \"\(queue)\""
        if !summary.rejected.isEmpty { line += ", \(summary.rejected.count) not accepted" }
        if wait { line += "; \(summary.succeeded) succeeded, \(summary.failed) failed" }
        writeError(line + "\n")
        if !summary.rejected.isEmpty || summary.failed > 0 { throw ExitCode.failure }
    }
}
