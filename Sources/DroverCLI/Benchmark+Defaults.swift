import Drover
import DroverProtocol
import Foundation

/// The `handlers` and `lookahead` scenarios: what a user gets with default flags and handlers
/// written in other languages, against baselines measured in the same run.
extension Benchmark {
    /// A complete `--serve` handler in Python, as docs/HANDLERS.md gives it.
    static let pythonHandler = """
        import sys
        for line in sys.stdin:
            print(line.rstrip("\\n").upper(), flush=True)

        """

    /// The pattern Drover grew from (shared/reference/seed-pattern.txt), with the same trivial
    /// handler: a process per runner, each with two `Handler`s whose threads drain an in-process
    /// `queue.Queue`. Two ways to give it items, chosen by the third argument:
    /// - `fed`: as a job system gets them, from outside: the parent puts each item on a runner's
    ///   `multiprocessing.Queue` and collects each result from a shared one (what Drover does,
    ///   with a broker and acknowledgements in between);
    /// - `local`: each runner makes its share itself and keeps the results, as the pattern's own
    ///   example does: no item crosses a process. The pattern's best case.
    /// Prints items/s, from the moment every runner may start to the last result.
    static let seedPattern = """
        import multiprocessing, sys, threading, time
        from concurrent.futures import ThreadPoolExecutor
        from queue import Queue

        def handle(line):
            return line.upper()

        class Handler:
            def __init__(self, results):
                self.queue = Queue()
                self.results = results

            def put(self, item):
                self.queue.put(item)

            def run(self):
                handled = 0
                while True:
                    item = self.queue.get()
                    if item == 'exit':
                        break
                    result = handle(item)
                    if self.results is not None:
                        self.results.put(result)
                    handled += 1
                return handled

        class Runner:
            def __init__(self, first, count, inbox, results):
                self.first, self.count, self.inbox = first, count, inbox
                self.a, self.b = Handler(results), Handler(results)

            def items(self):
                if self.inbox is None:
                    for n in range(self.first, self.first + self.count):
                        yield 'item-%d' % n
                else:
                    while True:
                        item = self.inbox.get()
                        if item == 'exit':
                            return
                        yield item

            def start(self, go, done):
                go.wait()
                with ThreadPoolExecutor() as exe:
                    futures = [exe.submit(h.run) for h in (self.a, self.b)]
                    for n, item in enumerate(self.items()):
                        (self.a if n % 2 == 0 else self.b).put(item)
                    self.a.put('exit')
                    self.b.put('exit')
                    done.put(sum(f.result() for f in futures))

        if __name__ == '__main__':
            total, runners, fed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == 'fed'
            share = total // runners
            go, done = multiprocessing.Event(), multiprocessing.Queue()
            results = multiprocessing.Queue() if fed else None
            inboxes = [multiprocessing.Queue() if fed else None for _ in range(runners)]
            procs = [multiprocessing.Process(target=Runner(i * share, share, inboxes[i], results).start, args=(go, done))
                     for i in range(runners)]
            for p in procs:
                p.start()
            time.sleep(0.5)  # let every process reach go.wait(): its start-up is not the pattern's speed
            start = time.monotonic()
            go.set()
            if fed:
                def feed():
                    for n in range(share * runners):
                        inboxes[n % runners].put('item-%d' % n)
                    for inbox in inboxes:
                        inbox.put('exit')
                threading.Thread(target=feed).start()
                for _ in range(share * runners):
                    results.get()
            handled = sum(done.get() for _ in procs)
            seconds = time.monotonic() - start
            for p in procs:
                p.join()
            assert handled == share * runners, handled
            print(handled / seconds)

        """

    /// Items/s of `python3 upper.py` under `--serve` and `--exec`, and of the seed pattern.
    func handlerProcesses(serveItems: Int, execItems: Int) throws -> BenchReport.Handlers {
        let handlerFile = "\(directory)/upper.py", seedFile = "\(directory)/seed_pattern.py"
        try Self.pythonHandler.write(toFile: handlerFile, atomically: true, encoding: .utf8)
        try Self.seedPattern.write(toFile: seedFile, atomically: true, encoding: .utf8)
        var serve: [Double] = [], exec: [Double] = [], fed: [Double] = [], local: [Double] = []
        for _ in 0..<settings.runs {
            serve.append(try handlerThroughput(["--serve", "python3 \(handlerFile)"], items: serveItems))
            exec.append(try handlerThroughput(["--exec", "python3 \(handlerFile)"], items: execItems))
            fed.append(try seedPatternThroughput(seedFile, items: serveItems, mode: "fed"))
            local.append(try seedPatternThroughput(seedFile, items: serveItems, mode: "local"))
        }
        let s = Figure(serve), e = Figure(exec), f = Figure(fed), l = Figure(local)
        return .init(serveItems: serveItems, execItems: execItems, serve: s, exec: e, seedPatternFed: f, seedPatternLocal: l,
                     serveOverSeedFed: s.median / f.median, serveOverSeedLocal: s.median / l.median, serveOverExec: s.median / e.median)
    }

    /// Items/s through one worker with 2 threads and default flags otherwise, the handler's
    /// processes already started.
    private func handlerThroughput(_ handler: [String], items: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: [handler], threads: 2, lookahead: nil)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        _ = try producer.send((0..<4).map { Array("warm-\($0)".utf8) })  // starts the handler processes
        return Double(items) / (try Self.secondsToComplete(producer, (0..<items).lazy.map { Array("item-\($0)".utf8) }, count: items))
    }

    private func seedPatternThroughput(_ script: String, items: Int, mode: String) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "\(items)", "2", mode]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let rate = Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandFailure("bench: the seed-pattern script failed (status \(process.terminationStatus)); is python3 installed?")
        }
        return rate
    }

    /// The self-sizing lookahead against fixed ones, and its fairness checks.
    func lookaheadScenario(items: Int, fairnessItems: Int, longItems: Int) throws -> BenchReport.Lookahead {
        var fixed: [Int: [Double]] = [:], auto: [Double] = [], fastShare: [Double] = [], mixedAuto: [Double] = [], mixedOne: [Double] = []
        for _ in 0..<settings.runs {
            auto.append(try echoThroughput(lookahead: nil, items: items))
            for n in [1, 64, 4096] { fixed[n, default: []].append(try echoThroughput(lookahead: n, items: items)) }
            fastShare.append(try fastWorkerShare(items: fairnessItems))
            mixedAuto.append(try mixedQueueSeconds(lookahead: nil, longItems: longItems))
            mixedOne.append(try mixedQueueSeconds(lookahead: 1, longItems: longItems))
        }
        let fixedFigures = fixed.mapValues(Figure.init)
        let best = fixedFigures.values.map(\.median).max() ?? 1
        let a = Figure(auto), mixedA = Figure(mixedAuto), mixed1 = Figure(mixedOne)
        return .init(items: items, auto: a, fixed: fixedFigures.map { .init(lookahead: $0.key, itemsPerSecond: $0.value) }.sorted { $0.lookahead < $1.lookahead },
                     autoOverBestFixed: a.median / best, fairnessItems: fairnessItems, fastWorkerShare: Figure(fastShare),
                     longItems: longItems, mixedSecondsAuto: mixedA, mixedSecondsLookaheadOne: mixed1,
                     mixedOverLookaheadOne: mixedA.median / mixed1.median)
    }

    /// `drover send --wait`'s path through one `--echo` worker with 2 threads.
    private func echoThroughput(lookahead: Int?, items: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: [["--echo"]], threads: 2, lookahead: lookahead)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        let payload = [UInt8](repeating: 0x61, count: 16)
        return Double(items) / (try Self.secondsToComplete(producer, repeatElement(payload, count: items), count: items))
    }

    /// One worker whose items take 0.5 s and one `--echo` worker, both with default flags: the
    /// share of the items the fast one ran.
    private func fastWorkerShare(items: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: [["--bench-handler", "sleep:500"], ["--echo"]], threads: 2, lookahead: nil)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        _ = try Self.secondsToComplete(producer, (0..<items).lazy.map { Array("\($0)".utf8) }, count: items)
        let status = try ControlClient(endpoint: fleet.endpoint, role: "broker", timeoutSeconds: 10, context: context).status()
        let fast = status.workers.first { $0.name == "bench-2" }?.completed ?? 0
        return Double(fast) / Double(items)
    }

    /// Seconds for two workers × 2 threads to finish a queue of 1 ms items with a 1 s item
    /// every 100.
    private func mixedQueueSeconds(lookahead: Int?, longItems: Int) throws -> Double {
        let fleet = try BenchFleet(self, workers: Array(repeating: ["--bench-handler", "payload-ms"], count: 2), threads: 2, lookahead: lookahead)
        defer { fleet.stop() }
        let producer = try fleet.producer(wait: true)
        let items = (0..<(longItems * 100)).map { Array(($0 % 100 == 0 ? "1000" : "1").utf8) }
        return try Self.secondsToComplete(producer, items, count: items.count)
    }
}

extension BenchReport {
    struct Handlers: Codable {
        var serveItems: Int
        var execItems: Int
        /// Items/s of `python3 upper.py` under `--serve` and `--exec`, and of the seed pattern's
        /// script with items fed from outside and with items made in-process.
        var serve: Figure
        var exec: Figure
        var seedPatternFed: Figure
        var seedPatternLocal: Figure
        var serveOverSeedFed: Double
        var serveOverSeedLocal: Double
        var serveOverExec: Double
    }

    struct Lookahead: Codable {
        struct Fixed: Codable {
            var lookahead: Int
            var itemsPerSecond: Figure
        }
        var items: Int
        var auto: Figure
        var fixed: [Fixed]
        var autoOverBestFixed: Double
        var fairnessItems: Int
        /// With a 0.5 s worker and a fast one, the fast one's share of the items.
        var fastWorkerShare: Figure
        var longItems: Int
        var mixedSecondsAuto: Figure
        var mixedSecondsLookaheadOne: Figure
        var mixedOverLookaheadOne: Double
    }

    func defaultsTable(_ n: (Double) -> String, _ f: (Figure) -> String) -> [String] {
        var lines: [String] = []
        if let h = handlers {
            lines.append("")
            lines.append("handlers     python3 upper.py, one worker × 2 threads, default flags; the seed pattern: 2 processes × 2 threads")
            lines.append("             --serve (\(h.serveItems) items): \(f(h.serve)) items/s   --exec (\(h.execItems) items): \(f(h.exec)) items/s   --serve ÷ --exec: \(n(h.serveOverExec))")
            lines.append("             seed pattern, items fed in and results out through multiprocessing queues: \(f(h.seedPatternFed)) items/s; --serve ÷ it: \(String(format: "%.2f", h.serveOverSeedFed))")
            lines.append("             seed pattern, items made in-process, nothing crosses a process: \(f(h.seedPatternLocal)) items/s; --serve ÷ it: \(String(format: "%.2f", h.serveOverSeedLocal))")
        }
        if let l = lookahead {
            lines.append("")
            lines.append("lookahead    \(l.items) 16-byte items through one --echo worker × 2 threads: default (auto) \(f(l.auto)) items/s; "
                         + l.fixed.map { "fixed \($0.lookahead): \(f($0.itemsPerSecond))" }.joined(separator: "; ")
                         + "; auto ÷ best fixed: \(String(format: "%.2f", l.autoOverBestFixed))")
            lines.append("             a 0.5 s worker and an --echo worker, \(l.fairnessItems) items: the fast one ran \(f(Figure(l.fastWorkerShare.asPercent))) % of them")
            lines.append("             1 ms items with a 1 s item every 100 (\(l.longItems) long), 2 workers × 2 threads: auto \(f(l.mixedSecondsAuto)) s, lookahead 1 \(f(l.mixedSecondsLookaheadOne)) s; ratio \(String(format: "%.2f", l.mixedOverLookaheadOne))")
        }
        return lines
    }
}

extension Figure {
    var asPercent: [Double] { [median * 100, min * 100, max * 100] }
}
