import ArgumentParser
import Drover
import Foundation
import Synchronization
import ZeroMQ

struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a whole fleet on this machine: a broker, a controller and N workers, as child processes.",
        discussion: """
        The broker keeps its journal in --data-dir (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/drover/up, else ~/.local/state/drover/up), so starting the fleet again picks up the items it held when it stopped. --in-memory keeps none.

        The fleet runs secured: a key set is made in DATA-DIR/keys on the first start and kept (broker, controller, worker, and "you", an admin key for your own commands), every connection is encrypted and authenticated, and the commands printed carry the flags to use.

        Prints the endpoints and the commands to use them. Ctrl-C (or `drover exit` from another terminal) shuts the fleet down in order: workers drain and exit, then the controller and the broker stop. A second Ctrl-C stops everything at once.

        Examples:
          drover up --workers 2 --threads 2 --exec 'tr a-z A-Z'
          drover up --workers 4 --echo --base-port 6000
          drover up --serve 'python3 handler.py'
        """
    )

    @Option(help: "Worker processes to start.")
    var workers = 2

    @Option(help: "Handler threads per worker.")
    var threads = 2

    @Option(help: "Shell command each worker runs per item (see `drover worker --help`).")
    var exec: String?

    @Option(help: "Shell command each worker keeps running per handler thread, items streamed through its stdin and stdout (see `drover worker --help` and docs/HANDLERS.md).")
    var serve: String?

    @Flag(help: "Workers return and print each item.")
    var echo = false

    @Option(help: "The queue workers serve.")
    var queue = "default"

    @Option(help: "Broker port; the controller uses the next two. 0 lets the OS pick free ports.")
    var basePort = 5555

    @Option(help: "Address to bind on. Use 0.0.0.0 to let workers on other hosts join.")
    var host = "127.0.0.1"

    @Option(help: "Seconds workers may spend finishing running items when the fleet exits.")
    var deadline: Double = 30

    @Option(help: "Write the endpoints (broker, controller publish, controller commands) to this file once the fleet is up.")
    var readyFile: String?

    @Option(help: ArgumentHelp("The broker's journal directory, made if missing (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/drover/up, else ~/.local/state/drover/up).", valueName: "dir"))
    var dataDir: String?

    @Flag(help: "No journal: the broker keeps items in memory only, and stopping the fleet loses what it held (the less safe choice).")
    var inMemory = false

    @Flag(help: "Print the environment that gives your commands this fleet's keys (eval \"$(drover up --print-env)\"), making the keys if missing, and exit.")
    var printEnv = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if printEnv { return }
        guard [exec != nil, serve != nil, echo].filter({ $0 }).count == 1 else {
            throw ValidationError("give exactly one handler: --exec 'COMMAND' (a process per item), --serve 'COMMAND' (long-lived processes) or --echo")
        }
        guard (1...256).contains(workers) else { throw ValidationError("--workers must be between 1 and 256") }
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        guard basePort == 0 || (1...65533).contains(basePort) else { throw ValidationError("--base-port must be 0 or between 1 and 65533") }
        if inMemory && dataDir != nil {
            throw ValidationError("--in-memory and --data-dir contradict each other (is DROVER_DATA_DIR set?): keep a journal in --data-dir, or none with --in-memory")
        }
    }

    /// Where the fleet's keys live: `keys` in the data directory (also with --in-memory, so
    /// that the printed flags stay valid from one start to the next).
    var keysDirectory: String {
        (dataDir ?? BrokerOptions.defaultDataDirectory(name: "up", environment: ProcessInfo.processInfo.environment)) + "/keys"
    }

    /// The broker's journal directory, or nil for none.
    var journalDirectory: String? {
        inMemory ? nil : dataDir ?? BrokerOptions.defaultDataDirectory(name: "up", environment: ProcessInfo.processInfo.environment)
    }

    func run() throws {
        if printEnv {
            let keys = try LocalKeys(directory: keysDirectory)
            return writeOutput(keys.environment)
        }
        let logger = global.makeLogger(role: "up")
        if let exec { try ExecHandler.check(exec, flag: "--exec") }
        if let serve { try ExecHandler.check(serve, flag: "--serve") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("drover-up-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func port(_ offset: Int) -> String { basePort == 0 ? "*" : String(basePort + offset) }
        let connectHost = host == "0.0.0.0" || host == "*" ? "127.0.0.1" : host
        var children: [ChildProcess] = []
        let stopAll = { (children: [ChildProcess]) in for child in children.reversed() { child.stop(within: 5) } }

        let keys = try LocalKeys(directory: keysDirectory)

        // Broker, then controller, then workers: each waits for the one before to be listening.
        let journal = journalDirectory.map { ["--data-dir", $0] } ?? ["--in-memory"]
        let broker = try ChildProcess(role: "broker", arguments: ["broker", "--bind", "tcp://\(host):\(port(0))",
                                                                  "--ready-file", "\(directory)/broker"] + journal + keys.broker + global.childArguments)
        children.append(broker)
        let brokerEndpoint: String
        let publishEndpoint: String
        let commandEndpoint: String
        var workerProcesses: [ChildProcess] = []
        do {
            brokerEndpoint = reachable(try waitForReadyFile("\(directory)/broker", child: broker, seconds: 10)[0], host: connectHost)
            let controller = try ChildProcess(role: "controller", arguments: [
                "controller", "--broker", brokerEndpoint, "--publish", "tcp://\(host):\(port(1))",
                "--bind", "tcp://\(host):\(port(2))", "--ready-file", "\(directory)/controller"] + keys.controller + global.childArguments)
            children.append(controller)
            let lines = try waitForReadyFile("\(directory)/controller", child: controller, seconds: 10)
            publishEndpoint = reachable(lines[0], host: connectHost)
            commandEndpoint = reachable(lines[1], host: connectHost)
            for index in 1...workers {
                var arguments = ["worker", "--broker", brokerEndpoint, "--control", publishEndpoint, "--queue", queue,
                                 "--threads", String(threads), "--name", "worker-\(index)", "--drain-deadline", String(deadline),
                                 "--ready-file", "\(directory)/worker-\(index)"]
                arguments += exec.map { ["--exec", $0] } ?? serve.map { ["--serve", $0] } ?? ["--echo"]
                let worker = try ChildProcess(role: "worker-\(index)", arguments: arguments + keys.worker + global.childArguments)
                children.append(worker)
                workerProcesses.append(worker)
            }
            for (index, worker) in workerProcesses.enumerated() {
                _ = try waitForReadyFile("\(directory)/worker-\(index + 1)", child: worker, seconds: 15)
            }
        } catch {
            stopAll(children)
            throw error
        }

        let handler = exec.map { "--exec '\($0)'" } ?? serve.map { "--serve '\($0)'" } ?? "--echo"
        writeOutput("""
        drover fleet is up: \(workers) workers × \(threads) threads (\(handler)) on queue "\(queue)"
          broker               \(brokerEndpoint)
          journal              \(journalDirectory ?? "none (--in-memory)")
          controller publish   \(publishEndpoint)
          controller commands  \(commandEndpoint)
          keys                 \(keys.directory) (every connection encrypted and authenticated)
        try:
          drover send --broker \(brokerEndpoint) \(keys.you(server: "broker")) --queue \(queue) --wait hello world
          drover status --broker \(brokerEndpoint) \(keys.you(server: "broker"))
          drover exit --controller \(commandEndpoint) \(keys.you(server: "controller"))      (or Ctrl-C here)
        or give this fleet's keys to every command of a shell at once:
          eval "$(drover up --print-env\(dataDir.map { " --data-dir \($0)" } ?? ""))"
        """)
                if let readyFile { try writeReadyFile(readyFile, lines: [brokerEndpoint, publishEndpoint, commandEndpoint]) }

        let fleet = LocalFleet(children: children, workers: workerProcesses, commandEndpoint: commandEndpoint,
                               exitSecurity: try keys.yourSecurity(towards: "controller"),
                               deadlineMilliseconds: UInt32(deadline * 1000), logger: logger)
        try runHandlingSignals(fleet)
    }

    /// A bound wildcard endpoint (`tcp://0.0.0.0:5555`) as something a client can connect to.
    private func reachable(_ endpoint: String, host: String) -> String {
        endpoint.replacingOccurrences(of: "0.0.0.0", with: host)
    }
}

