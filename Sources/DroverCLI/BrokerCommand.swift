import ArgumentParser
import Drover
import Foundation
import DroverProtocol

struct BrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run the broker: queues items and hands them to workers against their credit.",
        discussion: """
        Producers, workers and the controller all connect to this one endpoint.

        Durable by default: every accepted item is written to a journal in --data-dir and synced to disk (fdatasync, in group commits) before its producer hears "accepted". A restart, or a crash, picks up every queued item, retry and dead letter. The default data directory is $STATE_DIRECTORY (systemd's StateDirectory=), else $XDG_STATE_HOME/drover/broker, else ~/.local/state/drover/broker; it is made if missing and locked while the broker runs. --in-memory keeps items in memory only: faster, and the less safe choice, since a stop or crash loses everything held.

        A failed item is retried with jittered exponential backoff; after --max-deliveries failed deliveries it goes to the dead-letter store (see `drover dlq`).

        Without keys the broker admits loopback peers only. To serve other hosts, give it --key (its secret certificate) and --authorized-keys (the public keys it admits, each with its role); see docs/SECURITY.md. --insecure admits everyone without keys.

        Examples:
          drover broker --bind tcp://*:5555 --max-deliveries 3 --queue-max-deliveries images=10
          drover broker --key keys/broker.key --authorized-keys keys/authorized
        """
    )

    @Option(help: "Endpoint to bind for producers, workers and the controller.")
    var bind = "tcp://*:5555"

    @Option(help: "Largest item accepted, in bytes.")
    var maxItemSize = 1 << 20

    @Option(help: "Most items held (queued or running) before producers are told to retry.")
    var maxItems = 1_000_000

    @Option(help: "Heartbeat interval towards workers, in milliseconds.")
    var heartbeatMs: Int32 = 1000

    @Option(help: "Heartbeat intervals of silence after which a worker is declared dead and its items redelivered.")
    var liveness: Int32 = 3

    @Option(help: "Failed deliveries (handler failed, or its worker died) before an item goes to the dead-letter store.")
    var maxDeliveries = 5

    @Option(name: .customLong("queue-max-deliveries"), parsing: .singleValue,
            help: ArgumentHelp("Per-queue delivery cap, as NAME=N; repeat, or separate with commas, for several queues.", valueName: "NAME=N"))
    var queueMaxDeliveries: [String] = []

    @Option(help: "Backoff before the first retry, in milliseconds; it doubles (with jitter) for each further retry.")
    var retryBaseMs: Int64 = 500

    @Option(help: "Longest retry backoff, in milliseconds.")
    var retryMaxMs: Int64 = 60_000

    @Option(help: "Write the bound endpoint to this file once listening.")
    var readyFile: String?

    @Option(help: ArgumentHelp("Directory for the journal, made if missing (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/drover/broker, else ~/.local/state/drover/broker).", valueName: "dir"))
    var dataDir: String?

    @Flag(help: "Keep items in memory only, with no journal: faster, but a stop or crash of the broker loses every item it holds (the less safe choice).")
    var inMemory = false

    @Option(help: ArgumentHelp("Size of each journal segment file, in bytes (default 64 MiB; at least 4 × --max-item-size).", valueName: "bytes"))
    var segmentSize: Int?

    @Option(help: ArgumentHelp("Payload bytes of queued items kept in memory, like 512MiB or 2GiB (default 1GiB, or a quarter of this machine's memory if less). With the journal, past it payloads stay on disk and are read back when dispatched, so a backlog larger than memory runs through; with --in-memory, producers are told \"queue full\" past it.", valueName: "size"))
    var memoryLimit: String?

    @Option(help: ArgumentHelp("Most payload bytes held in all, in memory or on disk, like 100GiB; past it producers are told \"queue full\" (default: no limit but the disk).", valueName: "size"))
    var maxBytes: String?

    @OptionGroup var keys: ServerKeyOptions

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateEndpoint(bind, flag: "--bind", binding: true)
        _ = try keys.security()
        guard maxItemSize > 0, maxItemSize <= 64 << 20 else { throw ValidationError("--max-item-size must be between 1 and 67108864 bytes") }
        guard maxItems > 0 else { throw ValidationError("--max-items must be at least 1") }
        guard heartbeatMs >= 10 else { throw ValidationError("--heartbeat-ms must be at least 10") }
        guard liveness >= 2 else { throw ValidationError("--liveness must be at least 2 (one lost heartbeat must not kill a worker)") }
        guard maxDeliveries >= 1 else { throw ValidationError("--max-deliveries must be at least 1") }
        guard retryBaseMs >= 0, retryMaxMs >= retryBaseMs else { throw ValidationError("--retry-base-ms must be at least 0 and at most --retry-max-ms") }
        _ = try parsedQueueCaps()
        if inMemory && dataDir != nil {
            throw ValidationError("--in-memory and --data-dir contradict each other (is DROVER_DATA_DIR set?): keep a journal in --data-dir, or none with --in-memory")
        }
        if let dataDir, dataDir.isEmpty { throw ValidationError("--data-dir is empty: give a directory, or --in-memory for no journal") }
        if let memoryLimit, (ByteSize.parse(memoryLimit) ?? 0) < 1 << 20 {
            throw ValidationError("--memory-limit takes a size of at least 1MiB, like 512MiB or 2GiB; got \"\(memoryLimit)\"")
        }
        if let maxBytes, ByteSize.parse(maxBytes) == nil {
            throw ValidationError("--max-bytes takes a size, like 100GiB (0 for no limit but the disk); got \"\(maxBytes)\"")
        }
        if let segmentSize, segmentSize > 1 << 30 {
            throw ValidationError("--segment-size must be at most 1073741824 bytes (1 GiB)")
        }
        if let segmentSize, segmentSize < BrokerOptions.minimumSegmentBytes(maxItemBytes: maxItemSize) {
            throw ValidationError("--segment-size must be at least \(BrokerOptions.minimumSegmentBytes(maxItemBytes: maxItemSize)) bytes (1 MiB, and room for 4 items of --max-item-size)")
        }
    }

    /// `--queue-max-deliveries NAME=N` values as a dictionary.
    func parsedQueueCaps() throws -> [String: Int] {
        var caps: [String: Int] = [:]
        for entry in queueMaxDeliveries.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let cap = Int(parts[1]), cap >= 1, QueueName.problem(parts[0]) == nil else {
                throw ValidationError("--queue-max-deliveries takes NAME=N with N at least 1, for example images=3; got \"\(entry)\"")
            }
            caps[parts[0]] = cap
        }
        return caps
    }

    func run() throws {
        var options = BrokerOptions()
        options.bind = bind
        options.maxItemBytes = maxItemSize
        options.maxItems = maxItems
        options.heartbeatMilliseconds = heartbeatMs
        options.liveness = liveness
        options.readyFile = readyFile
        options.maxDeliveries = maxDeliveries
        options.queueMaxDeliveries = try parsedQueueCaps()
        options.retryBaseMilliseconds = retryBaseMs
        options.retryMaxMilliseconds = retryMaxMs
        options.dataDirectory = inMemory ? nil : dataDir ?? BrokerOptions.defaultDataDirectory(environment: ProcessInfo.processInfo.environment)
        options.segmentBytes = segmentSize ?? max(64 << 20, BrokerOptions.minimumSegmentBytes(maxItemBytes: maxItemSize))
        options.memoryLimitBytes = memoryLimit.flatMap(ByteSize.parse) ?? BrokerOptions.defaultMemoryLimit
        options.maxHeldBytes = maxBytes.flatMap(ByteSize.parse) ?? 0
        options.security = try keys.security()
        let logger = global.makeLogger(role: "broker")
        let broker = Broker(options: options, logger: logger)
        let reloads = reloadOnHangup(options.security.authorizedKeys, logger: logger)
        try withExtendedLifetime(reloads) { try runHandlingSignals(broker) }
    }
}
