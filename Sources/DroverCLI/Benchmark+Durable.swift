import CDroverShims
import Drover
import DroverDispatch
import DroverJournal
import DroverProtocol
import Foundation
import ZeroMQ

extension BenchReport {
    /// The `durable` scenario: the journal's cost, against the same broker in memory and
    /// against the disk's own ceiling, in one run.
    struct Durable: Codable {
        struct AcceptLatency: Codable {
            var offeredPerSecond: Int
            var items: Int
            /// Microseconds from submit to `accepted` (the record synced), one item per submit.
            var p50: Figure
            var p99: Figure
        }

        var items: Int
        var itemBytes: Int
        /// Items/s acknowledged end to end (results back), default flags, in memory and journaled.
        var inMemory: Figure
        var journaled: Figure
        /// Median journaled ÷ median in memory.
        var ratio: Double
        /// Over the journaled runs.
        var syncsPerSecond: Figure
        var itemsPerSync: Figure
        var journalBytesPerItem: Figure
        var acceptLatency: [AcceptLatency]
        /// The same records written by one thread and synced by another with fdatasync,
        /// no broker: what this disk allows.
        var rawGroupCommit: Figure
        /// Redis with `appendfsync always`, the same items added to a stream (XADD, 16
        /// pipelined clients); nil when `redis-server` is not installed.
        var redisAlwaysFsync: Figure?
        var recoveryItems: Int
        var recoverySeconds: Figure
        /// A backlog several times the broker's memory limit: its size, the limit, the broker's
        /// largest RSS while it was queued, and the items/s at which 2 workers then drained it.
        var backlogBytes: Int = 0
        var backlogMemoryLimit: Int = 0
        var backlogMaxResident: Figure?
        var backlogDrainPerSecond: Figure?
    }

    func durableTable(_ n: (Double) -> String, _ f: (Figure) -> String) -> [String] {
        guard let d = durable else { return [] }
        var lines = ["", "durable      \(d.items) items of \(d.itemBytes) B acknowledged end to end, default flags:"]
        lines.append("             in memory \(f(d.inMemory)) items/s; journaled \(f(d.journaled)) items/s: \(String(format: "%.2f", d.ratio)) of in memory (target ≥ 0.5)")
        lines.append("             \(f(d.syncsPerSecond)) fsyncs/s, \(f(d.itemsPerSync)) items per fsync, \(f(d.journalBytesPerItem)) journal bytes per item")
        for l in d.acceptLatency {
            lines.append("             submit → accepted at \(l.offeredPerSecond)/s (\(l.items) items): p50 \(f(l.p50)) µs, p99 \(f(l.p99)) µs")
        }
        lines.append("             ceiling: raw fdatasync group commit of the same records \(f(d.rawGroupCommit)) items/s")
        if let redis = d.redisAlwaysFsync {
            lines.append("             Redis appendfsync always, XADD to a stream: \(f(redis)) items/s")
        } else {
            lines.append("             Redis: not measured (redis-server is not installed, or --quick)")
        }
        lines.append("             recovery of \(d.recoveryItems) queued 100-byte items: \(f(d.recoverySeconds)) s")
        if let rss = d.backlogMaxResident, let drain = d.backlogDrainPerSecond {
            lines.append("             backlog of \(d.backlogBytes >> 20) MiB (items of \(max(1024, (d.backlogBytes + 999_999) / 1_000_000)) B), --memory-limit \(d.backlogMemoryLimit >> 20) MiB: broker RSS at most \(f(Figure([rss.min / 1_048_576, rss.median / 1_048_576, rss.max / 1_048_576]))) MiB; drained by 2 workers at \(f(drain)) items/s")
        }
        return lines
    }
}

extension Benchmark {
    func durableScenario(items: Int, latencyItems: Int, recoveryItems: Int, backlogBytes: Int, backlogLimit: Int) throws -> BenchReport.Durable {
        var inMemory: [Double] = [], journaled: [Double] = []
        var syncRates: [Double] = [], perSync: [Double] = [], bytes: [Double] = []
        for _ in 0..<settings.runs {
            inMemory.append(try endToEnd(items: items, journal: false).itemsPerSecond)
            let run = try endToEnd(items: items, journal: true)
            journaled.append(run.itemsPerSecond)
            if let j = run.journal {
                syncRates.append(Double(j.syncs) / run.seconds)
                perSync.append(Double(j.itemsSynced) / Double(max(j.syncs, 1)))
                bytes.append(Double(j.bytesWritten) / Double(items))
            }
        }
        var latencies: [BenchReport.Durable.AcceptLatency] = []
        for rate in [1000, 10_000] {
            let count = max(latencyItems * rate / 10_000, 100)
            var p50: [Double] = [], p99: [Double] = []
            for _ in 0..<settings.runs {
                let sorted = try acceptLatencies(rate: rate, count: count).sorted()
                p50.append(sorted[sorted.count / 2])
                p99.append(sorted[min(sorted.count - 1, Int(0.99 * Double(sorted.count)))])
            }
            latencies.append(.init(offeredPerSecond: rate, items: count, p50: Figure(p50), p99: Figure(p99)))
        }
        var raw: [Double] = [], redis: [Double] = [], recovery: [Double] = []
        for _ in 0..<settings.runs {
            raw.append(try rawGroupCommit(items: items, recordBytes: 16 + 20 + 30))
            if settings.redis, let rate = try redisAlwaysFsync(items: items, payload: 16) { redis.append(rate) }
            recovery.append(try recoverySeconds(items: recoveryItems))
        }
        var residents: [Double] = [], drains: [Double] = []
        for _ in 0..<settings.runs {
            let run = try backlog(bytes: backlogBytes, memoryLimit: backlogLimit)
            residents.append(Double(run.maxResident))
            drains.append(run.drainPerSecond)
        }
        let memoryFigure = Figure(inMemory), journaledFigure = Figure(journaled)
        return .init(items: items, itemBytes: 16, inMemory: memoryFigure, journaled: journaledFigure,
                     ratio: journaledFigure.median / max(memoryFigure.median, 1), syncsPerSecond: Figure(syncRates),
                     itemsPerSync: Figure(perSync), journalBytesPerItem: Figure(bytes), acceptLatency: latencies,
                     rawGroupCommit: Figure(raw), redisAlwaysFsync: redis.isEmpty ? nil : Figure(redis),
                     recoveryItems: recoveryItems, recoverySeconds: Figure(recovery), backlogBytes: backlogBytes,
                     backlogMemoryLimit: backlogLimit, backlogMaxResident: Figure(residents), backlogDrainPerSecond: Figure(drains))
    }

    /// 16-byte items through a broker with default worker flags, results back; with the
    /// journal's figures when it keeps one.
    private func endToEnd(items: Int, journal: Bool) throws -> (itemsPerSecond: Double, seconds: Double, journal: BrokerStatus.Journal?) {
        let fleet = try BenchFleet(self, workers: Array(repeating: ["--bench-handler", "noop"], count: settings.workers),
                                   threads: settings.threads, lookahead: nil, journal: journal)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        let seconds = try Self.secondsToComplete(producer, repeatElement([UInt8](repeating: 0x61, count: 16), count: items), count: items)
        let status = try ControlClient(endpoint: fleet.endpoint, role: "broker", timeoutSeconds: 10, context: context).status()
        return (Double(items) / seconds, seconds, status.journal)
    }

    /// Microseconds from `submit` to `accepted` for single items offered at `rate`, to a
    /// journaled broker with no workers (so every item is answered with `accepted`).
    private func acceptLatencies(rate: Int, count: Int) throws -> [Double] {
        let fleet = try BenchFleet(self, workers: [], threads: 1, lookahead: nil, journal: true)
        defer { fleet.stop() }
        let socket = try ZMQSocket(context, type: .dealer, linger: 0)
        try socket.connect(fleet.endpoint)
        try socket.set(.receiveTimeout(milliseconds: 10_000))
        try socket.send(Codec.encode(.hello(Hello(role: .producer, name: "bench-latency"))))
        guard let frames = try socket.receive(), case .welcome = try Codec.decode(frames) else {
            throw CommandFailure("bench: the broker did not welcome the latency producer")
        }
        var poller = ZMQPoller()
        let socketIndex = poller.add(socket)
        let schedule = try OfferSchedule(rate: rate)
        let timerIndex = poller.add(fileDescriptor: schedule.timer)
        let run = UInt64.random(in: 1...UInt64.max)
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        var next = 0
        let limit = DispatchTime.now().uptimeNanoseconds + UInt64(Double(count) / Double(rate) * 1e9) + 30_000_000_000
        while latencies.count < count {
            guard DispatchTime.now().uptimeNanoseconds < limit else { throw CommandFailure("bench: items were not accepted within 30 s") }
            let now = DispatchTime.now().uptimeNanoseconds
            while next < count && schedule.due(next) <= now {
                let item = SubmittedItem(id: ItemID(high: run, low: UInt64(next)), payload: [UInt8](repeating: 0x61, count: 16))
                try socket.send(Codec.encode(.submit(Submit(queue: "latency", wantsResults: false, items: [item]))))
                next += 1
            }
            if next < count { schedule.arm(for: next) }
            let ready = try poller.poll(timeout: 100)
            if ready[timerIndex] { schedule.clear() }
            guard ready[socketIndex] else { continue }
            while let frames = try socket.receive(dontWait: true) {
                let arrived = DispatchTime.now().uptimeNanoseconds
                switch try Codec.decode(frames) {
                case .accepted(let ids):
                    for id in ids where id.high == run { latencies.append(Double(arrived - schedule.due(Int(id.low))) / 1000) }
                case .rejected(let rejection):
                    throw CommandFailure("bench: the broker refused latency items: \(rejection.reason)")
                default:
                    break
                }
            }
        }
        return latencies
    }

    /// Items/s when one thread appends records of `recordBytes` to a preallocated file and
    /// another syncs whatever was written, each sync acknowledging what it covered: the
    /// journal's shape without the broker.
    private func rawGroupCommit(items: Int, recordBytes: Int) throws -> Double {
        let path = "\(directory)/raw-group-commit-\(UInt32.random(in: 0...UInt32.max))"
        let fs = DiskFileSystem()
        let file = try fs.open(path, create: true)
        defer { try? fs.remove(path) }
        let size = max(64 << 20, items * recordBytes + 4096)
        try file.allocate(size)
        try fs.syncDirectory(directory)
        final class Shared: @unchecked Sendable {
            let lock = NSCondition()
            var written = 0
            var synced = 0
            var failure: (any Error)?
        }
        let shared = Shared()
        let start = DispatchTime.now().uptimeNanoseconds
        let syncer = Thread {
            while true {
                shared.lock.lock()
                while shared.written == shared.synced { shared.lock.wait() }
                let target = shared.written
                shared.lock.unlock()
                do { try file.sync() } catch {
                    shared.lock.lock()
                    shared.failure = error
                    shared.synced = items
                    shared.lock.broadcast()
                    shared.lock.unlock()
                    return
                }
                shared.lock.lock()
                shared.synced = target
                shared.lock.broadcast()
                let finished = target >= items
                shared.lock.unlock()
                if finished { return }
            }
        }
        syncer.start()
        // The writer appends in batches, as the broker's loop writes once per turn.
        let batch = 256
        var record = [UInt8](repeating: 0x61, count: recordBytes * batch)
        var offset = 0, done = 0
        while done < items {
            let n = min(batch, items - done)
            if n < batch { record = Array(record.prefix(n * recordBytes)) }
            try file.write(record, at: offset)
            offset += n * recordBytes
            done += n
            shared.lock.lock()
            shared.written = done
            shared.lock.signal()
            shared.lock.unlock()
        }
        shared.lock.lock()
        while shared.synced < items { shared.lock.wait() }
        let failure = shared.failure
        shared.lock.unlock()
        if let failure { throw CommandFailure("bench: raw group commit: \(failure)") }
        return Double(items) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// Items/s through Redis with `appendfsync always`: `redis-benchmark` adding `items`
    /// entries to a stream, 16 clients pipelining 16 commands each. Nil without redis-server.
    private func redisAlwaysFsync(items: Int, payload: Int) throws -> Double? {
        guard let server = Self.executable("redis-server"), let benchmark = Self.executable("redis-benchmark"),
              let cli = Self.executable("redis-cli"), let timeout = Self.executable("timeout") else { return nil }
        let dir = "\(directory)/redis-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try Self.freePort()
        // Under `timeout`, so that a bench killed outright leaves no server behind for long.
        let redis = Process()
        redis.executableURL = URL(fileURLWithPath: timeout)
        redis.arguments = ["600", server, "--port", "\(port)", "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes",
                           "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        redis.standardInput = FileHandle.nullDevice
        redis.standardOutput = FileHandle.nullDevice
        redis.standardError = FileHandle.nullDevice
        try redis.run()
        defer {
            redis.terminate()
            redis.waitUntilExit()
        }
        let value = String(repeating: "a", count: payload)
        // Wait until it answers (redis-benchmark with fewer requests than clients never ends).
        for _ in 0..<100 {
            if (try? Self.capture(timeout, ["5", cli, "-p", "\(port)", "ping"]))?.contains("PONG") == true { break }
            usleep(50_000)
        }
        let output = try Self.capture(timeout, ["300", benchmark, "-p", "\(port)", "-n", "\(items)", "-c", "16", "-P", "16", "-q",
                                                "XADD", "drover-bench", "*", "item", value])
        // "XADD drover-bench * item aaaa: 123456.79 requests per second, p50=…"
        guard let figure = output.split(separator: "\r").last(where: { $0.contains("requests per second") })
            .flatMap({ $0.split(separator: ":").last?.split(separator: " ").first }).flatMap({ Double($0) }) else {
            throw CommandFailure("bench: could not read redis-benchmark's figure from: \(output.suffix(300))")
        }
        return figure
    }

    /// A backlog of `bytes` in 1 KiB items (larger past a million) queued with no workers on a broker limited to
    /// `memoryLimit` bytes of payloads in memory (its RSS sampled as they arrive), then drained
    /// by 2 no-op workers: the largest RSS seen, and the drain's items/s.
    private func backlog(bytes: Int, memoryLimit: Int) throws -> (maxResident: Int, drainPerSecond: Double) {
        // 1 KiB items, or larger ones past a million items (the broker's default --max-items).
        let itemBytes = max(1024, (bytes + 999_999) / 1_000_000)
        let count = bytes / itemBytes
        let fleet = try BenchFleet(self, workers: [], threads: 1, lookahead: nil,
                                   extraBrokerArguments: ["--memory-limit", "\(memoryLimit)", "--max-items", "\(max(count, 1))"], journal: true)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: false)
        // The broker's RSS, sampled every 50 ms while the backlog arrives.
        final class Sampler: @unchecked Sendable {
            let lock = NSLock()
            var maxResident = 0
            var done = false
        }
        let sampler = Sampler()
        let pid = fleet.broker.pid
        let thread = Thread { [self] in
            while !sampler.lock.withLock({ sampler.done }) {
                let rss = residentBytes(pid)
                sampler.lock.withLock { sampler.maxResident = max(sampler.maxResident, rss) }
                usleep(50_000)
            }
        }
        thread.start()
        let summary = try producer.send(repeatElement([UInt8](repeating: 0x61, count: itemBytes), count: count))
        sampler.lock.withLock { sampler.done = true }
        guard summary.accepted == count else { throw CommandFailure("bench: \(count) backlog items sent, \(summary.accepted) accepted") }
        var maxResident = sampler.lock.withLock { sampler.maxResident }
        let start = DispatchTime.now().uptimeNanoseconds
        let drainers = try (0..<2).map { index in
            try BenchWorker(self, endpoint: fleet.endpoint, name: "drain-\(index)")
        }
        defer { for worker in drainers { worker.stop() } }
        let client = try ControlClient(endpoint: fleet.endpoint, role: "broker", timeoutSeconds: 10, context: context)
        let limit = DispatchTime.now().uptimeNanoseconds + 600_000_000_000
        while true {
            let status = try client.status()
            maxResident = max(maxResident, residentBytes(fleet.broker.pid))
            if status.itemsHeld == 0 { break }
            guard DispatchTime.now().uptimeNanoseconds < limit else { throw CommandFailure("bench: the backlog did not drain within 10 minutes") }
            usleep(50_000)
        }
        return (maxResident, Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
    }

    /// Seconds a broker takes to recover `items` queued 100-byte items from its journal.
    private func recoverySeconds(items: Int) throws -> Double {
        let dataDirectory = "\(directory)/recovery-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dataDirectory) }
        do {
            let fleet = try BenchFleet(self, workers: [], threads: 1, lookahead: nil,
                                       extraBrokerArguments: ["--data-dir", dataDirectory, "--max-items", "\(items)"], journal: true)
            defer { fleet.stop() }
            let producer = try fleet.producer(wait: false)
            let summary = try producer.send(repeatElement([UInt8](repeating: 0x61, count: 100), count: items))
            guard summary.accepted == items else { throw CommandFailure("bench: \(items) items sent but \(summary.accepted) accepted") }
        }
        let fleet = try BenchFleet(self, workers: [], threads: 1, lookahead: nil,
                                   extraBrokerArguments: ["--data-dir", dataDirectory, "--max-items", "\(items)"], journal: true)
        defer { fleet.stop() }
        let status = try ControlClient(endpoint: fleet.endpoint, role: "broker", timeoutSeconds: 30, context: context).status()
        guard let journal = status.journal, journal.recoveredItems == items else {
            throw CommandFailure("bench: the restarted broker recovered \(status.journal?.recoveredItems ?? 0) of \(items) items")
        }
        return journal.recoverySeconds
    }

    static func executable(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static func capture(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// A TCP port on loopback that was free a moment ago.
    static func freePort() throws -> Int {
        let context = ZMQContext()
        defer { context.terminate() }
        let socket = try ZMQSocket(context, type: .router, linger: 0)
        try socket.bind("tcp://127.0.0.1:*")
        let endpoint = try socket.lastEndpoint()
        socket.close()
        guard let port = endpoint.split(separator: ":").last.flatMap({ Int($0) }) else { throw CommandFailure("bench: no free port") }
        return port
    }
}

/// A no-op worker started against a running broker (for draining a backlog).
final class BenchWorker {
    private let child: ChildProcess

    init(_ bench: Benchmark, endpoint: String, name: String) throws {
        let ready = "\(bench.directory)/\(name)-\(UInt32.random(in: 0...UInt32.max))"
        child = try ChildProcess(role: "worker", arguments: ["worker", "--broker", endpoint, "--bench-handler", "noop", "--threads", "1",
                                                             "--name", name, "--ready-file", ready] + bench.settings.childArguments,
                                 discardingOutput: true)
        do {
            _ = try waitForReadyFile(ready, child: child, seconds: 10)
        } catch {
            child.stop(within: 2)
            throw error
        }
    }

    func stop() { child.stop(within: 5) }
}
