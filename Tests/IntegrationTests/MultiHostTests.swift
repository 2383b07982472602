import Foundation
import Testing

extension ProcessTests {
    /// A fleet spread over five hosts, each a network namespace with its own address, joined by
    /// a router namespace: the broker, the controller, two worker hosts and a producer. The
    /// processes are the real `drover` executable run with `ip netns exec`. Needs root (CI runs
    /// as root); anywhere else the lab cannot be built and these tests fail saying why.
    @Suite("Across hosts (network namespaces)")
    struct MultiHostTests {
        @Test("items from the producer host run on both worker hosts and every result comes back")
        func spreadAcrossHosts() throws {
            let fleet = try MultiHostFleet("spread")
            defer { fleet.tearDown() }
            let send = try fleet.send(items: 40, wait: true)
            #expect(send.status == 0, "\(send.stderr)")
            #expect(send.lines.count == 40)
            #expect(Set(send.lines) == ["host-a", "host-b"], "results name the worker host that ran each item")
            #expect(send.stderr.contains("40 succeeded, 0 failed"))
        }

        @Test("drover exit from the producer host shuts down the workers on every host, each exiting 0")
        func coordinatedExit() throws {
            let fleet = try MultiHostFleet("exit")
            defer { fleet.tearDown() }
            let exit = try fleet.sandbox.run(["exit", "--controller", fleet.commands, "--deadline", "10"] + fleet.keys.client("admin", broker: false, controller: true),
                                             timeout: 60, namespace: fleet.lab["producer"].namespace)
            #expect(exit.status == 0, "\(exit.stderr)")
            for (host, worker) in fleet.workers {
                #expect(worker.wait(seconds: 30) == 0, "the worker on \(host) exits 0: \(worker.stderr.suffix(1000))")
            }
        }

        @Test("a worker host cut off mid-run has its items redelivered to the other host; its late acks are rejected")
        func partitionedWorkerHost() throws {
            // Items of 2 s, twice the liveness window (4 × 250 ms): host-a notices the silence
            // while its items still run, so their outcomes wait for its new registration and are
            // rejected as stale. With 1 s items an outcome could finish just before the silence
            // was noticed, go into the dead connection and be lost, and no stale ack would come.
            let fleet = try MultiHostFleet("partition", handlerSeconds: "2")
            defer { fleet.tearDown() }
            let items = 16
            let send = try fleet.sandbox.start("send", ["send", "--broker", fleet.broker, "--wait", "--timeout", "10"] + fleet.keys.client("producer")
                                               + (1...items).map { "item-\($0)" }, namespace: fleet.lab["producer"].namespace)
            #expect(fleet.sandbox.eventually(seconds: 30) { fleet.ledger().contains { $0.worker == "host-a" } }, "host-a starts items")
            try fleet.lab.partition("host-a")

            // The broker declares host-a dead after the liveness window (1 s here) and host-b runs its items.
            #expect(send.wait(seconds: 90) == 0, "\(send.stderr)")
            let results = send.stdout.split(separator: "\n")
            #expect(results.count == items, "one result per item")
            #expect(send.stderr.contains("\(items) succeeded, 0 failed"))
            let ledger = fleet.ledger()
            #expect(Set(ledger.map(\.item)).count == items, "lost: 0")
            let redelivered = Dictionary(grouping: ledger, by: \.item).filter { $0.value.count > 1 }
            #expect(!redelivered.isEmpty, "host-a's running items ran again on host-b")
            #expect(redelivered.values.allSatisfy { runs in runs.contains { $0.worker == "host-b" } && Set(runs.map(\.attempt)).count == runs.count })

            try fleet.lab.heal("host-a")
            // host-a registers again and reports what it finished while cut off: too late, and rejected.
            var counters: [String: Int] = [:]
            #expect(fleet.sandbox.eventually(seconds: 30) {
                counters = (try? fleet.status()["counters"] as? [String: Int]) ?? [:]
                return (counters["staleOutcomes"] ?? 0) >= 1
            }, "late outcomes from host-a are counted stale: \(counters)")
            #expect(counters["completed"] == items, "no item completed twice")
            #expect(fleet.workers["host-a"]?.exitStatus == nil, "host-a's worker rejoined without a restart")
        }

        @Test("without keys the broker admits loopback peers only: a worker on another host is refused, and admitted with --insecure")
        func loopbackOnlyWithoutKeys() throws {
            let lab = try NetworkLab(hosts: ["broker", "host-a"])
            defer { lab.tearDown() }
            let sandbox = try Sandbox("hosts-loopback")
            defer { sandbox.tearDown() }
            let endpoint = "tcp://\(lab["broker"].address):5555"
            func startBroker(_ name: String, _ extra: [String]) throws -> DroverProcess {
                let ready = sandbox.path("\(name).ready")
                let broker = try sandbox.start(name, ["broker", "--in-memory", "--ready-file", ready] + extra, namespace: lab["broker"].namespace)
                _ = try sandbox.waitForFile(ready, process: broker)
                return broker
            }
            var broker = try startBroker("broker", [])
            #expect(broker.stderr.contains("serving loopback peers only"))
            let worker = try sandbox.start("host-a", ["worker", "--broker", endpoint, "--name", "host-a", "--echo"], namespace: lab["host-a"].namespace)
            #expect(sandbox.eventually(seconds: 20) { worker.stderr.contains("admits loopback peers only") }, "the worker says why: \(worker.stderr)")
            #expect(broker.stderr.contains("refused a connection") && broker.stderr.contains(lab["host-a"].address))
            // The broker's own host still reaches it.
            let local = try sandbox.run(["status", "--broker", "tcp://127.0.0.1:5555", "--json"], namespace: lab["broker"].namespace)
            #expect(local.status == 0 && local.stdout.contains("\"mode\" : \"loopback\""), "\(local.stderr)")
            let workers = (try? JSONSerialization.jsonObject(with: Data(local.stdout.utf8)) as? [String: Any])?["workers"] as? [Any]
            #expect(workers?.isEmpty == true, "host-a never registered")

            broker.signal(SIGKILL)
            _ = broker.wait(seconds: 10)
            broker = try startBroker("broker-insecure", ["--insecure"])
            #expect(broker.stderr.contains("INSECURE"))
            #expect(sandbox.eventually(seconds: 20) { broker.stderr.contains("worker joined") }, "with --insecure host-a registers: \(worker.stderr.suffix(1000))")
        }

        @Test("a broker restarted on its host is found again by the workers on the other hosts, without restarting them")
        func brokerRestart() throws {
            let fleet = try MultiHostFleet("restart")
            defer { fleet.tearDown() }
            fleet.brokerProcess.signal(SIGKILL)
            _ = fleet.brokerProcess.wait(seconds: 10)
            try fleet.startBroker(name: "broker-2")
            #expect(fleet.sandbox.eventually(seconds: 30) { ((try? fleet.status()["workers"] as? [Any])?.count ?? 0) == 2 },
                    "both worker hosts registered with the new broker")
            let send = try fleet.send(items: 20, wait: true)
            #expect(send.status == 0, "\(send.stderr)")
            #expect(Set(send.lines) == ["host-a", "host-b"])
            #expect(fleet.workers.values.allSatisfy { $0.exitStatus == nil }, "no worker was restarted")
        }
    }
}

/// Five hosts (broker, controller, host-a, host-b, producer) and a fleet on them, with short
/// heartbeats (250 ms × 4: a silent worker is declared dead after 1 s).
final class MultiHostFleet: @unchecked Sendable {
    let lab: NetworkLab
    let sandbox: Sandbox
    private(set) var brokerProcess: DroverProcess
    var workers: [String: DroverProcess] = [:]
    let broker: String
    let commands: String
    /// The fleet's keys: every process across hosts authenticates and encrypts (CURVE).
    let keys: FleetKeys
    static let timing = ["--heartbeat-ms", "250", "--liveness", "4"]

    init(_ name: String, handlerSeconds: String = "0.2") throws {
        lab = try NetworkLab(hosts: ["broker", "controller", "host-a", "host-b", "producer"])
        do {
            sandbox = try Sandbox("hosts-\(name)")
            keys = try FleetKeys(sandbox)
        } catch {
            lab.tearDown()
            throw error
        }
        // Default ports throughout: each host has a network stack of its own.
        broker = "tcp://\(lab["broker"].address):5555"
        commands = "tcp://\(lab["controller"].address):5557"
        brokerProcess = try Self.launchBroker(sandbox, lab, keys, name: "broker")
        do {
            let ready = sandbox.path("controller.ready")
            let controller = try sandbox.start("controller", ["controller", "--broker", broker, "--ready-file", ready] + keys.controller,
                                               namespace: lab["controller"].namespace)
            _ = try sandbox.waitForFile(ready, process: controller)
            let ledger = sandbox.path("ledger")
            let handler = "echo \"$DROVER_ITEM_ID $DROVER_ATTEMPT $DROVER_WORKER\" >> \(ledger); sleep \(handlerSeconds); printf %s \"$DROVER_WORKER\""
            for host in ["host-a", "host-b"] {
                let ready = sandbox.path("\(host).ready")
                workers[host] = try sandbox.start(host, [
                    "worker", "--broker", broker, "--control", "tcp://\(lab["controller"].address):5556", "--name", host,
                    "--threads", "2", "--lookahead", "0", "--exec", handler, "--ready-file", ready]
                    + Self.timing + keys.client("worker", controller: true),
                    namespace: lab[host].namespace)
            }
            for host in ["host-a", "host-b"] { _ = try sandbox.waitForFile(sandbox.path("\(host).ready"), process: workers[host]!) }
        } catch {
            tearDown()
            throw error
        }
    }

    private static func launchBroker(_ sandbox: Sandbox, _ lab: NetworkLab, _ keys: FleetKeys, name: String) throws -> DroverProcess {
        let ready = sandbox.path("\(name).ready")
        let process = try sandbox.start(name, ["broker", "--ready-file", ready] + timing + keys.broker,
                                        namespace: lab["broker"].namespace)
        _ = try sandbox.waitForFile(ready, process: process)
        return process
    }

    /// Starts a new broker on the broker host, on the same address.
    func startBroker(name: String) throws {
        brokerProcess = try Self.launchBroker(sandbox, lab, keys, name: name)
    }

    func send(items: Int, wait: Bool) throws -> Sandbox.Finished {
        try sandbox.run(["send", "--broker", broker, "--timeout", "10"] + keys.client("producer") + (wait ? ["--wait"] : []) + (1...items).map { "item-\($0)" },
                        timeout: 120, namespace: lab["producer"].namespace)
    }

    /// The broker's status, asked from the producer host.
    func status() throws -> [String: Any] {
        let run = try sandbox.run(["status", "--broker", broker, "--json", "--timeout", "3"] + keys.client("producer"), timeout: 30,
                                  namespace: lab["producer"].namespace)
        guard run.status == 0 else { throw HarnessError("drover status failed: \(run.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any] ?? [:]
    }

    /// Every execution the handlers recorded: item id, attempt, worker host.
    func ledger() -> [(item: String, attempt: Int, worker: String)] {
        let text = (try? String(contentsOfFile: sandbox.path("ledger"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, let attempt = Int(parts[1]) else { return nil }
            return (String(parts[0]), attempt, String(parts[2]))
        }
    }

    /// Kills every process, then removes the hosts.
    func tearDown() {
        sandbox.tearDown()
        lab.tearDown()
    }
}
