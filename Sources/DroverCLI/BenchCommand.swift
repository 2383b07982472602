import ArgumentParser
import Drover
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the fleet on this machine against a raw libzmq pipeline run alongside it.",
        discussion: """
        Starts real broker and worker processes on loopback and drives them. Scenarios:
          throughput  items/s end to end (every item acknowledged back to the producer), no-op handler, per item size; beside it the same process topology as a raw libzmq PUSH → forwarder → PULL pipeline, and Drover ÷ raw
          latency     p50 / p99 / p99.9 from send to completion at fixed offered rates
          scaling     handlers that sleep 10 ms on 32 handler threads, against the ideal
          memory      broker RSS per queued 100-byte item, no workers
          handlers    python3 under --serve and --exec, against the seed pattern
          lookahead   the default (auto) lookahead against fixed ones, and fairness
          durable     the journal: 16-byte items end to end journaled against in memory (same run), submit → accepted latency, fsyncs/s, items per fsync, bytes per item, a raw fdatasync group-commit ceiling, Redis with appendfsync always (when installed), and recovery time
          secure      the same fleet with keys (CURVE on every connection) against plaintext, 16-byte items end to end, and the handshake's cost per connection

        Every figure is the median of --runs runs, with min and max. Build with -c release.

        Examples:
          swift build -c release --product drover && .build/release/drover bench
          drover bench --scenarios throughput --sizes 16 --runs 5 --json
        """
    )

    @Option(help: "Scenarios to run, comma-separated: throughput, latency, scaling, memory, handlers (python3 under --serve and --exec against the seed pattern), lookahead (default flags against fixed lookaheads, and fairness), durable (the journal against in memory and the disk's ceiling), secure (keys against plaintext, and the handshake).")
    var scenarios = "throughput,latency,scaling,memory,handlers,lookahead,durable,secure"

    @Option(help: "Queued items the durable scenario recovers after a restart.")
    var recoveryItems = 1_000_000

    @Option(help: ArgumentHelp("The durable scenario's backlog, in 1 KiB items up to 1,000,000 (larger backlogs use larger items), like 1GiB or 20GiB.", valueName: "size"))
    var backlogSize = "1GiB"

    @Option(help: ArgumentHelp("The broker's --memory-limit for that backlog.", valueName: "size"))
    var backlogMemoryLimit = "128MiB"

    @Option(help: "Item sizes in bytes for throughput, comma-separated.")
    var sizes = "16,256,4096"

    @Option(help: "Items per throughput run for the smallest size (larger sizes send proportionally fewer, at least a tenth).")
    var items = 1_000_000

    @Option(help: "Worker processes for throughput and latency.")
    var workers = 2

    @Option(help: "Handler threads per worker for throughput and latency.")
    var threads = 1

    @Option(help: "Items each throughput worker holds beyond one per thread (its credit is threads + lookahead). No-op items finish in microseconds, and on a 2-core machine a process may wait milliseconds for a core, so a worker needs thousands in hand to stay busy while outcomes travel back; the deeper the credit, the larger the batches.")
    var lookahead = 4096

    @Option(help: "The same for latency workers. Less: when the offered rate outruns the fleet, a deep lookahead lets the backlog wait inside the workers.")
    var latencyLookahead = 512

    @Option(help: "Runs per figure; the median is reported.")
    var runs = 3

    @Option(help: "Offered rates for latency, items/s, comma-separated.")
    var rates = "1000,10000,100000"

    @Option(help: "Seconds per latency run.")
    var latencySeconds = 1.0

    @Option(help: "Queued items for the memory scenario.")
    var memoryItems = 1_000_000

    @Flag(help: "Tiny counts: checks that every scenario runs and adds up, in seconds (for tests).")
    var quick = false

    @Flag(help: "Skip the raw libzmq runs (the raw and ratio columns stay empty). With `time`, this gives the fleet's own CPU per item, the steadiest figure for comparing two builds on a drifting machine.")
    var noRaw = false

    @Flag(help: "Print the results as JSON.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let known = ["throughput", "latency", "scaling", "memory", "handlers", "lookahead", "durable", "secure"]
        for s in scenarios.split(separator: ",") where !known.contains(String(s)) {
            throw ValidationError("unknown scenario \"\(s)\"; choose from \(known.joined(separator: ", "))")
        }
        guard ByteSize.parse(backlogSize) != nil, (ByteSize.parse(backlogMemoryLimit) ?? 0) >= 1 << 20 else {
            throw ValidationError("--backlog-size and --backlog-memory-limit take sizes like 1GiB and 128MiB (the limit at least 1MiB)")
        }
        guard parse(sizes) != nil, parse(rates) != nil else { throw ValidationError("--sizes and --rates take comma-separated positive numbers") }
        guard lookahead >= 0, latencyLookahead >= 0 else { throw ValidationError("--lookahead and --latency-lookahead must be 0 or more") }
        guard items > 0, workers > 0, threads > 0, runs > 0, latencySeconds > 0, memoryItems > 0, recoveryItems > 0 else {
            throw ValidationError("counts must be positive")
        }
    }

    func run() throws {
        var settings = BenchSettings(
            scenarios: Set(scenarios.split(separator: ",").map(String.init)), sizes: parse(sizes)!, items: items,
            workers: workers, threads: threads, lookahead: lookahead, latencyLookahead: latencyLookahead, raw: !noRaw, runs: runs, rates: parse(rates)!, latencySeconds: latencySeconds,
            memoryItems: memoryItems, childArguments: ["--log-level", "warning", "--log-format", global.logFormat.rawValue])
        settings.recoveryItems = recoveryItems
        settings.backlogBytes = ByteSize.parse(backlogSize)!
        settings.backlogLimit = ByteSize.parse(backlogMemoryLimit)!
        if quick {
            settings.items = 2000
            settings.runs = 1
            settings.rates = [500, 2000]
            settings.latencySeconds = 0.2
            settings.memoryItems = 20_000
            settings.scalingItemsPerThread = 3
            settings.serveItems = 500
            settings.execItems = 4
            settings.lookaheadItems = 2000
            settings.fairnessItems = 50
            settings.longItems = 1
            settings.durableItems = 2000
            settings.acceptLatencyItems = 1000
            settings.recoveryItems = 2000
            settings.redis = false
            settings.backlogBytes = 8 << 20
            settings.backlogLimit = 1 << 20
            settings.secureConnections = 10
        }
        _ = global.makeLogger(role: "bench")
        #if DEBUG
        if !quick { writeError("warning: this is a debug build; measure with `swift build -c release`\n") }
        #endif
        let report = try Benchmark(settings: settings).run { line in if !json { writeError(line + "\n") } }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            writeOutput(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            writeOutput(report.table())
        }
    }

    private func parse(_ list: String) -> [Int]? {
        let values = list.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return values.map { $0! }
    }
}
