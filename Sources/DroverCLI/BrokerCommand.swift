import ArgumentParser
import Drover

struct BrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run the broker: queues items and hands them to workers against their credit.",
        discussion: """
        Producers, workers and the controller all connect to this one endpoint.
        The queue is held in memory: items still queued when the broker stops are lost.

        Example:
          drover broker --bind tcp://*:5555
        """
    )

    @Option(help: "Endpoint to bind for producers, workers and the controller.")
    var bind = "tcp://*:5555"

    @Option(help: "Largest item accepted, in bytes.")
    var maxItemSize = 1 << 20

    @Option(help: "Most items held (queued or running) before producers are told to retry.")
    var maxItems = 1_000_000

    @Option(help: "Heartbeat interval towards workers, in milliseconds; a worker silent for 3 intervals is declared dead.")
    var heartbeatMs: Int32 = 1000

    @Option(help: "Write the bound endpoint to this file once listening.")
    var readyFile: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateEndpoint(bind, flag: "--bind", binding: true)
        guard maxItemSize > 0, maxItemSize <= 64 << 20 else { throw ValidationError("--max-item-size must be between 1 and 67108864 bytes") }
        guard maxItems > 0 else { throw ValidationError("--max-items must be at least 1") }
        guard heartbeatMs >= 10 else { throw ValidationError("--heartbeat-ms must be at least 10") }
    }

    func run() throws {
        var options = BrokerOptions()
        options.bind = bind
        options.maxItemBytes = maxItemSize
        options.maxItems = maxItems
        options.heartbeatMilliseconds = heartbeatMs
        options.readyFile = readyFile
        let broker = Broker(options: options, logger: global.makeLogger(role: "broker"))
        let signals = SignalRelay { _, _ in broker.stop() }
        try withExtendedLifetime(signals) { try broker.run() }
    }
}
