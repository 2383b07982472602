import CDroverShims
import Drover
import DroverProtocol
import Foundation
import Logging
import ZeroMQ

/// What `drover bench` runs.
struct BenchSettings {
    var scenarios: Set<String>
    var sizes: [Int]
    var items: Int
    var workers: Int
    var threads: Int
    var lookahead: Int
    var latencyLookahead: Int
    /// Whether throughput runs measure the raw pipeline too.
    var raw = true
    var runs: Int
    var rates: [Int]
    var latencySeconds: Double
    var memoryItems: Int
    var childArguments: [String]
    /// Scaling sends this many items per handler thread (100 × 32 threads = 3,200 items, 1 s ideal).
    var scalingItemsPerThread = 100
    /// `handlers`: items through `--serve` (and the seed pattern), and through `--exec`.
    var serveItems = 100_000, execItems = 40
    /// `lookahead`: items per throughput run, items for the 0.5 s worker check, 1 s items in the mixed queue (× 100 items in all).
    var lookaheadItems = 300_000, fairnessItems = 2000, longItems = 16
    /// `durable`: items per end-to-end run, items at 10,000/s for submit → accepted (a tenth of
    /// them at 1,000/s), queued items recovered after a restart.
    var durableItems = 300_000, acceptLatencyItems = 20_000, recoveryItems = 1_000_000
    /// `secure`: producers that connect, one after another, to time the handshake.
    var secureConnections = 200
    /// Whether `durable` measures Redis beside (when it is installed).
    var redis = true
    /// `durable`: a backlog of this many bytes through a broker limited to `backlogLimit` in memory.
    var backlogBytes = 1 << 30, backlogLimit = 128 << 20
    /// Scaling runs 4 workers × 8 threads = 32 handler threads.
    let scalingWorkers = 4, scalingThreads = 8, scalingSleepMilliseconds = 10
}

/// A figure measured over several runs.
struct Figure: Codable {
    var median: Double
    var min: Double
    var max: Double

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        guard !sorted.isEmpty else { (median, min, max) = (0, 0, 0); return }
        median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        min = sorted.first ?? 0
        max = sorted.last ?? 0
    }
}

/// Everything `drover bench` measured, for the table and `--json`.
struct BenchReport: Codable {
    struct Throughput: Codable {
        var itemBytes: Int
        var items: Int
        /// Items per second, acknowledged end to end.
        var drover: Figure
        /// Messages per second through the raw pipeline.
        var raw: Figure
        /// Median Drover ÷ median raw.
        var ratio: Double
    }

    struct Latency: Codable {
        var offeredPerSecond: Int
        var items: Int
        /// Microseconds from send to completion at the producer.
        var p50: Figure
        var p99: Figure
        var p999: Figure
        /// The same for a message echoed back along the same path in plain libzmq.
        var rawP50: Figure
        var rawP99: Figure
    }

    struct Scaling: Codable {
        var handlerThreads: Int
        var sleepMilliseconds: Int
        var items: Int
        var itemsPerSecond: Figure
        var idealPerSecond: Double
        /// Median items/s ÷ ideal, in percent.
        var efficiencyPercent: Double
    }

    struct Memory: Codable {
        var items: Int
        var payloadBytes: Int
        /// Broker resident memory per queued item.
        var bytesPerItem: Figure
        /// `bytesPerItem` less the payload.
        var overheadPerItem: Figure
    }

    var machine: String
    var date: String
    var workers: Int
    var threads: Int
    var fixedLookahead: Int
    var latencyLookahead: Int
    var runs: Int
    var throughput: [Throughput] = []
    var latency: [Latency] = []
    var scaling: Scaling?
    var memory: Memory?
    var handlers: Handlers?
    var lookahead: Lookahead?
    var durable: Durable?
    var secure: Secure?

    func table() -> String {
        var lines = ["drover bench — \(machine), \(date); \(workers) workers × \(threads) threads, lookahead \(fixedLookahead) (latency \(latencyLookahead)); median (min–max) of \(runs) runs"]
        func n(_ v: Double) -> String { v >= 100 ? String(Int(v.rounded())) : String(format: "%.1f", v) }
        func f(_ fig: Figure) -> String { "\(n(fig.median)) (\(n(fig.min))–\(n(fig.max)))" }
        if !throughput.isEmpty {
            lines.append("")
            lines.append("throughput   item bytes   items       drover items/s              raw msgs/s                  drover ÷ raw")
            for t in throughput {
                let raw = t.raw.median > 0 ? f(t.raw) : "-", ratio = t.raw.median > 0 ? String(format: "%.2f", t.ratio) : "-"
                lines.append("             \(pad(t.itemBytes, 12))\(pad(t.items, 12))\(f(t.drover).padding(toLength: 28, withPad: " ", startingAt: 0))\(raw.padding(toLength: 28, withPad: " ", startingAt: 0))\(ratio)")
            }
        }
        if !latency.isEmpty {
            lines.append("")
            lines.append("latency      offered/s    items       p50 µs                      p99 µs                      p99.9 µs                    raw p50 µs   raw p99 µs")
            for l in latency {
                lines.append("             \(pad(l.offeredPerSecond, 12))\(pad(l.items, 12))\(f(l.p50).padding(toLength: 28, withPad: " ", startingAt: 0))\(f(l.p99).padding(toLength: 28, withPad: " ", startingAt: 0))\(f(l.p999).padding(toLength: 28, withPad: " ", startingAt: 0))\(n(l.rawP50.median).padding(toLength: 13, withPad: " ", startingAt: 0))\(n(l.rawP99.median))")
            }
        }
        if let s = scaling {
            lines.append("")
            lines.append("scaling      \(s.handlerThreads) threads × \(s.sleepMilliseconds) ms sleep, \(s.items) items: \(f(s.itemsPerSecond)) items/s of an ideal \(n(s.idealPerSecond)): efficiency \(String(format: "%.1f", s.efficiencyPercent)) %")
        }
        if let m = memory {
            lines.append("")
            lines.append("memory       \(m.items) queued \(m.payloadBytes)-byte items: \(f(m.bytesPerItem)) bytes/item, overhead \(f(m.overheadPerItem)) bytes/item")
        }
        lines += durableTable(n, f)
        lines += secureTable(n, f)
        lines += defaultsTable(n, f)
        return lines.joined(separator: "\n")
    }

    private func pad(_ v: Int, _ width: Int) -> String { String(v).padding(toLength: width, withPad: " ", startingAt: 0) }
}

/// Runs the scenarios against real processes started from this executable.
struct Benchmark {
    let settings: BenchSettings
    let directory: String
    let logger = Logger(label: "bench")
    let context = ZMQContext()

    init(settings: BenchSettings) {
        self.settings = settings
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("drover-bench-\(getpid())").path
    }

    func run(progress: (String) -> Void) throws -> BenchReport {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let formatter = ISO8601DateFormatter()
        var report = BenchReport(machine: machineDescription(), date: formatter.string(from: Date()),
                                 workers: settings.workers, threads: settings.threads, fixedLookahead: settings.lookahead, latencyLookahead: settings.latencyLookahead, runs: settings.runs)
        if settings.scenarios.contains("throughput") {
            let smallest = settings.sizes.min()!
            for size in settings.sizes {
                let count = max(settings.items * smallest / size, settings.items / 10)
                progress("throughput: \(count) items of \(size) B, \(settings.runs) runs each for Drover and raw libzmq")
                var drover: [Double] = [], raw: [Double] = []
                for _ in 0..<settings.runs {
                    drover.append(try droverThroughput(size: size, count: count))
                    if settings.raw { raw.append(try rawThroughput(size: size, count: count)) }
                }
                let d = Figure(drover), r = Figure(raw)
                report.throughput.append(.init(itemBytes: size, items: count, drover: d, raw: r, ratio: raw.isEmpty ? 0 : d.median / r.median))
            }
        }
        if settings.scenarios.contains("latency") {
            for rate in settings.rates {
                let count = max(Int(Double(rate) * settings.latencySeconds), 10)
                progress("latency: \(count) items offered at \(rate)/s, \(settings.runs) runs")
                var p50: [Double] = [], p99: [Double] = [], p999: [Double] = [], rawP50: [Double] = [], rawP99: [Double] = []
                func quantile(_ sorted: [Double], _ p: Double) -> Double { sorted[min(sorted.count - 1, Int(p * Double(sorted.count)))] }
                for _ in 0..<settings.runs {
                    let sorted = try latencies(rate: rate, count: count).sorted()
                    p50.append(quantile(sorted, 0.5)); p99.append(quantile(sorted, 0.99)); p999.append(quantile(sorted, 0.999))
                    let raw = try rawLatencies(rate: rate, count: count).sorted()
                    rawP50.append(quantile(raw, 0.5)); rawP99.append(quantile(raw, 0.99))
                }
                report.latency.append(.init(offeredPerSecond: rate, items: count, p50: Figure(p50), p99: Figure(p99), p999: Figure(p999),
                                            rawP50: Figure(rawP50), rawP99: Figure(rawP99)))
            }
        }
        if settings.scenarios.contains("scaling") {
            let threads = settings.scalingWorkers * settings.scalingThreads
            let count = threads * settings.scalingItemsPerThread
            progress("scaling: \(count) items, \(threads) threads sleeping \(settings.scalingSleepMilliseconds) ms each")
            var rates: [Double] = []
            for _ in 0..<settings.runs { rates.append(try scaling(count: count)) }
            let ideal = Double(threads) * 1000 / Double(settings.scalingSleepMilliseconds)
            let figure = Figure(rates)
            report.scaling = .init(handlerThreads: threads, sleepMilliseconds: settings.scalingSleepMilliseconds, items: count,
                                   itemsPerSecond: figure, idealPerSecond: ideal, efficiencyPercent: figure.median / ideal * 100)
        }
        if settings.scenarios.contains("memory") {
            progress("memory: \(settings.memoryItems) queued 100-byte items, no workers")
            var perItem: [Double] = []
            for _ in 0..<settings.runs { perItem.append(try memory(count: settings.memoryItems, payload: 100)) }
            report.memory = .init(items: settings.memoryItems, payloadBytes: 100, bytesPerItem: Figure(perItem),
                                  overheadPerItem: Figure(perItem.map { $0 - 100 }))
        }
        if settings.scenarios.contains("handlers") {
            progress("handlers: python3 under --serve (\(settings.serveItems) items) and --exec (\(settings.execItems)), and the seed pattern, \(settings.runs) runs")
            report.handlers = try handlerProcesses(serveItems: settings.serveItems, execItems: settings.execItems)
        }
        if settings.scenarios.contains("lookahead") {
            progress("lookahead: default against fixed 1, 64, 4096 (\(settings.lookaheadItems) items); fairness with a 0.5 s worker; a mixed queue, \(settings.runs) runs")
            report.lookahead = try lookaheadScenario(items: settings.lookaheadItems, fairnessItems: settings.fairnessItems, longItems: settings.longItems)
        }
        if settings.scenarios.contains("durable") {
            progress("durable: \(settings.durableItems) 16-byte items journaled and in memory, submit → accepted at 1,000 and 10,000/s, the disk's ceiling, Redis, recovery of \(settings.recoveryItems) items; \(settings.runs) runs")
            report.durable = try durableScenario(items: settings.durableItems, latencyItems: settings.acceptLatencyItems,
                                                 recoveryItems: settings.recoveryItems, backlogBytes: settings.backlogBytes,
                                                 backlogLimit: settings.backlogLimit)
        }
        if settings.scenarios.contains("secure") {
            progress("secure: \(settings.items) 16-byte items with keys (CURVE) and without, and \(settings.secureConnections) connections each, \(settings.runs) runs")
            report.secure = try secureScenario(items: settings.items, connections: settings.secureConnections)
        }
        return report
    }

    // MARK: Scenarios

    /// Items/s from the first send to the last completion, every item acknowledged end to end.
    func droverThroughput(size: Int, count: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: settings.workers, threads: settings.threads, handler: "noop", lookahead: settings.lookahead)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        let payload = [UInt8](repeating: 0x61, count: size)
        return Double(count) / (try Self.secondsToComplete(producer, repeatElement(payload, count: count), count: count))
    }

    /// Sends the `count` items through `producer` and waits for every outcome; the seconds that
    /// took. Fails unless every item succeeded.
    static func secondsToComplete<S: Sequence>(_ producer: Producer, _ items: S, count: Int) throws -> Double where S.Element == [UInt8] {
        let start = DispatchTime.now().uptimeNanoseconds
        let summary = try producer.send(items)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        guard summary.succeeded == count else {
            throw CommandFailure("bench: \(count) items sent but \(summary.succeeded) completed (\(summary.failed) failed, \(summary.rejected.count) refused)")
        }
        return seconds
    }

    /// Messages/s through producer PUSH → forwarder PULL/PUSH → consumers PULL, counted at the consumers.
    func rawThroughput(size: Int, count: Int) throws -> Double {
        let reports = try ZMQSocket(context, type: .pull, linger: 0)
        try reports.bind("tcp://127.0.0.1:*")
        let reportEndpoint = try reports.lastEndpoint()
        let pipeline = try RawProcesses(self, hub: .forwarder, leaf: .consumer) { index in
            ["--report", reportEndpoint, "--index", "\(index)"]
        }
        defer { pipeline.stop() }
        let push = try ZMQSocket(context, type: .push, linger: 0)
        try push.connect(pipeline.entry)
        var counts: [UInt32: UInt64] = [:]
        func waitFor(_ total: UInt64) throws {
            try reports.set(.receiveTimeout(milliseconds: 30_000))
            while counts.values.reduce(0, +) < total {
                guard let frames = try reports.receive(), let frame = frames.first, frame.count == 12 else {
                    throw CommandFailure("bench: the raw pipeline stopped reporting")
                }
                let index = frame[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                counts[index] = frame[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            }
        }
        // Warm up until every consumer has taken something, so the timed run uses all of them.
        let payload = [UInt8](repeating: 0x61, count: size)
        var warm: UInt64 = 0
        while counts.count < settings.workers {
            for _ in 0..<(settings.workers * 10) { try push.send([payload]) }
            warm += UInt64(settings.workers * 10)
            try waitFor(warm)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<count { try push.send([payload]) }
        try waitFor(warm + UInt64(count))
        return Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// Microseconds from send to completion for items offered at `rate` per second.
    func latencies(rate: Int, count: Int) throws -> [Double] {
        let fleet = try BenchFleet(self, workers: settings.workers, threads: settings.threads, handler: "noop", lookahead: settings.latencyLookahead)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        final class Times { var sent: [UInt64]; var latencies: [Double] = []; init(_ n: Int) { sent = Array(repeating: 0, count: n) } }
        let times = Times(count)
        // The producer waits for the broker or for this timer, armed for the next item's due
        // time: exact to the microsecond, without spinning on a machine with two cores.
        let schedule = try OfferSchedule(rate: rate)
        try producer.begin(onOutcome: { index, _ in
            times.latencies.append(Double(DispatchTime.now().uptimeNanoseconds - times.sent[index]) / 1000)
        }, alsoWakeOn: schedule.timer)
        let payload = [UInt8](repeating: 0x61, count: 16)
        var index = 0
        while index < count {
            let now = DispatchTime.now().uptimeNanoseconds
            if now < schedule.due(index) {
                schedule.arm(for: index)
                try producer.pump(timeoutMilliseconds: 100)
                schedule.clear()
                continue
            }
            // Everything due by now goes out in one batch, as a producer behind its input would
            // send it. Latency counts from when each item was due, not when it went out, so a
            // producer that falls behind cannot hide the wait.
            while index < count && schedule.due(index) <= now {
                times.sent[index] = schedule.due(index)
                try producer.offer(payload)
                index += 1
            }
            try producer.flush()
        }
        let limit = DispatchTime.now().uptimeNanoseconds + 30_000_000_000
        while producer.unfinished > 0 {
            guard DispatchTime.now().uptimeNanoseconds < limit else { throw CommandFailure("bench: items did not complete within 30 s") }
            try producer.pump(timeoutMilliseconds: 10)
        }
        guard times.latencies.count == count else { throw CommandFailure("bench: \(count) items sent, \(times.latencies.count) completed") }
        return times.latencies
    }

    /// Microseconds for a 16-byte message offered at `rate` per second to travel client →
    /// relay → echo → relay → client in plain libzmq: the floor under an item's trip.
    func rawLatencies(rate: Int, count: Int) throws -> [Double] {
        let pipeline = try RawProcesses(self, hub: .relay, leaf: .echo) { _ in [] }
        defer { pipeline.stop() }
        let socket = try ZMQSocket(context, type: .dealer, linger: 0)
        try socket.set(.sendHighWaterMark(0))
        try socket.set(.receiveHighWaterMark(0))
        try socket.connect(pipeline.entry)
        let schedule = try OfferSchedule(rate: rate)
        var poller = ZMQPoller()
        _ = poller.add(socket)
        _ = poller.add(fileDescriptor: schedule.timer)
        // Every echo answers before the clock starts, so the timed run uses all of them.
        try socket.set(.receiveTimeout(milliseconds: 10_000))
        for index in 0..<(settings.workers * 4) {
            try socket.send([[], withUnsafeBytes(of: UInt64(index), Array.init)])
            guard try socket.receive() != nil else { throw CommandFailure("bench: the raw echo did not answer") }
        }
        var sent = [UInt64](repeating: 0, count: count)
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        var index = 0
        let limit = schedule.due(count) + 30_000_000_000
        while latencies.count < count {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < limit else { throw CommandFailure("bench: raw echoes did not return within 30 s") }
            while index < count && schedule.due(index) <= now {
                sent[index] = schedule.due(index)
                var payload = withUnsafeBytes(of: UInt64(index), Array.init)
                payload += [UInt8](repeating: 0x61, count: 8)
                try socket.send([[], payload])
                index += 1
            }
            if index < count { schedule.arm(for: index) }
            _ = try poller.poll(timeout: 100)
            schedule.clear()
            while let frames = try socket.receive(dontWait: true) {
                guard frames.count == 2, frames[1].count == 16 else { continue }
                let echoed = Int(frames[1].prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
                latencies.append(Double(DispatchTime.now().uptimeNanoseconds - sent[echoed]) / 1000)
            }
        }
        return latencies
    }

    /// Items/s with handlers that sleep, on 32 handler threads.
    func scaling(count: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: settings.scalingWorkers, threads: settings.scalingThreads,
                                   handler: "sleep:\(settings.scalingSleepMilliseconds)")
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        return Double(count) / (try Self.secondsToComplete(producer, repeatElement([UInt8](repeating: 0x61, count: 16), count: count), count: count))
    }

    /// Broker resident bytes per queued item.
    func memory(count: Int, payload: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: 0, threads: 1, handler: "noop", extraBrokerArguments: ["--max-items", "\(count)"])
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: false)
        let before = residentBytes(fleet.broker.pid)
        let summary = try producer.send(repeatElement([UInt8](repeating: 0x61, count: payload), count: count))
        guard summary.accepted == count else { throw CommandFailure("bench: \(count) items sent but \(summary.accepted) accepted") }
        return Double(residentBytes(fleet.broker.pid) - before) / Double(count)
    }

    // MARK: Machine facts

    func residentBytes(_ pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    func machineDescription() -> String {
        let cpu = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let version = zmqVersion()
        return "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(cpu), libzmq \(version.major).\(version.minor).\(version.patch)"
    }
}

/// Due times for items offered at a fixed rate from now, and a timer (a timerfd that a poller
/// can wait on) armed for one of them: exact to the microsecond, without spinning on a machine
/// with two cores.
final class OfferSchedule {
    let timer: Int32
    private let start = DispatchTime.now().uptimeNanoseconds
    private let interval: Double

    init(rate: Int) throws {
        interval = 1e9 / Double(rate)
        timer = drover_timerfd()
        guard timer >= 0 else { throw CommandFailure("bench: timerfd_create failed: \(String(cString: strerror(errno)))") }
    }

    deinit { close(timer) }

    /// When item `index` is due, in DispatchTime's uptime nanoseconds (CLOCK_MONOTONIC on
    /// Linux, the timer's clock).
    func due(_ index: Int) -> UInt64 { start + UInt64(Double(index) * interval) }

    /// Makes ``timer`` readable when item `index` is due.
    func arm(for index: Int) { drover_timerfd_arm_at(timer, due(index)) }

    /// Reads the timer's expirations, so that it is not readable until armed again.
    func clear() {
        var expirations: UInt64 = 0
        _ = read(timer, &expirations, 8)
    }
}

/// The processes of a raw libzmq baseline: a hub (forwarder or relay) and one leaf (consumer
/// or echo) per worker connected to the hub's far side, stopped together.
final class RawProcesses {
    /// Where the bench process connects: the hub's near side.
    private(set) var entry = ""
    private var children: [ChildProcess] = []

    init(_ bench: Benchmark, hub: BenchRawCommand.Role, leaf: BenchRawCommand.Role, leafArguments: (Int) -> [String]) throws {
        let ready = "\(bench.directory)/\(hub.rawValue)-\(UInt32.random(in: 0...UInt32.max))"
        let process = try ChildProcess(role: hub.rawValue, arguments: ["bench-raw", "--role", hub.rawValue, "--ready-file", ready])
        children.append(process)
        do {
            let endpoints = try waitForReadyFile(ready, child: process, seconds: 10)
            entry = endpoints[0]
            for index in 0..<bench.settings.workers {
                children.append(try ChildProcess(role: leaf.rawValue, arguments: [
                    "bench-raw", "--role", leaf.rawValue, "--source", endpoints[1]] + leafArguments(index)))
            }
        } catch {
            stop()
            throw error
        }
    }

    func stop() {
        for child in children.reversed() { child.stop(within: 2) }
    }
}

/// A broker and workers started for one measurement, stopped afterwards.
final class BenchFleet {
    let broker: ChildProcess
    private(set) var endpoint = ""
    private var children: [ChildProcess] = []
    private let bench: Benchmark
    /// The fleet's keys, when it runs secured.
    private let keys: LocalKeys?

    convenience init(_ bench: Benchmark, workers: Int, threads: Int, handler: String, lookahead: Int? = 1,
                     extraBrokerArguments: [String] = [], journal: Bool = false) throws {
        try self.init(bench, workers: Array(repeating: ["--bench-handler", handler], count: workers), threads: threads,
                      lookahead: lookahead, extraBrokerArguments: extraBrokerArguments, journal: journal)
    }

    /// A broker and one worker per entry of `workers`, each given those handler arguments
    /// (`["--serve", "python3 upper.py"]`); `lookahead` nil leaves the worker's default.
    /// `journal`: the broker keeps its journal (the default) in a fresh directory under the
    /// bench's own; else it runs `--in-memory`.
    init(_ bench: Benchmark, workers: [[String]], threads: Int, lookahead: Int?, extraBrokerArguments: [String] = [],
         journal: Bool = false, keys: LocalKeys? = nil) throws {
        self.bench = bench
        self.keys = keys
        let tag = UInt32.random(in: 0...UInt32.max)
        let ready = "\(bench.directory)/broker-\(tag)"
        let storage = journal ? ["--data-dir", "\(bench.directory)/data-\(tag)"] : ["--in-memory"]
        broker = try ChildProcess(role: "broker", arguments: ["broker", "--bind", "tcp://127.0.0.1:*", "--ready-file", ready]
                                  + storage + extraBrokerArguments + (keys?.broker ?? []) + bench.settings.childArguments)
        children.append(broker)
        do {
            endpoint = try waitForReadyFile(ready, child: broker, seconds: 10)[0]
            var readyFiles: [(String, ChildProcess)] = []
            for (index, handler) in workers.enumerated() {
                let file = "\(bench.directory)/worker-\(tag)-\(index)"
                let worker = try ChildProcess(role: "worker", arguments: [
                    "worker", "--broker", endpoint, "--threads", "\(threads)"] + (lookahead.map { ["--lookahead", "\($0)"] } ?? [])
                    + handler + ["--name", "bench-\(index + 1)", "--ready-file", file] + (keys.map { ["--key", $0.path("worker.key"), "--broker-key", $0.path("broker.pub")] } ?? [])
                    + bench.settings.childArguments,
                    discardingOutput: true)
                children.append(worker)
                readyFiles.append((file, worker))
            }
            for (file, worker) in readyFiles { _ = try waitForReadyFile(file, child: worker, seconds: 10) }
        } catch {
            stop()
            throw error
        }
    }

    /// A producer already connected, so that no measurement includes the connection.
    func producer(wait: Bool) throws -> Producer {
        var options = ProducerOptions(broker: endpoint)
        options.waitForResults = wait
        options.window = 100_000
        options.security = try keys?.yourSecurity(towards: "broker")
        let producer = try Producer(options: options, context: bench.context, logger: bench.logger)
        try producer.connect()
        return producer
    }

    func stop() {
        for child in children.reversed() { child.stop(within: 5) }
    }
}
