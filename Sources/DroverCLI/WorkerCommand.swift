import ArgumentParser
import Drover
import DroverProtocol
import Foundation

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: handler threads that take items from the broker and run a handler on each.",
        discussion: """
        Start as many as you like, on any hosts. SIGTERM (or Ctrl-C) drains this worker: it hands unstarted items back, finishes running ones, and exits 0; a second one stops it at once and the broker redelivers its items.

        Exit status: 0 drained, 2 stopped at once, 3 drain deadline passed.

        Examples:
          drover worker --broker tcp://broker-host:5555 --control tcp://broker-host:5556 --threads 4 --exec 'gzip -c | wc -c'
          drover worker --broker tcp://127.0.0.1:5555 --threads 4 --serve 'python3 handler.py'
          drover worker --broker tcp://127.0.0.1:5555 --echo
        """
    )

    @Option(help: "The broker to take items from.")
    var broker: String

    @Option(help: "The controller's publish endpoint, to hear fleet exit directly (the broker relays it too).")
    var control: String?

    @Option(help: "The queue to serve.")
    var queue = "default"

    @Option(help: "Handler threads.")
    var threads = 2

    @Option(help: ArgumentHelp("Items held ready beyond one per thread, or 'auto': start at 1 and double while the handler threads run dry and the broker has more, up to 4096, keeping at most about 50 ms of work per thread and 64 MiB of items waiting.", valueName: "N|auto"))
    var lookahead = "auto"

    @Option(help: "Name shown in logs and status (default HOST:PID).")
    var name: String?

    @Option(help: "Run this shell command per item: item on stdin, result from stdout, non-zero exit fails the item.")
    var exec: String?

    @Option(help: "Start this shell command once per handler thread and keep it running: items go to its stdin, results come from its stdout (see --serve-format and docs/HANDLERS.md). For handlers in any language that should not pay a process start per item.")
    var serve: String?

    @Option(help: "How --serve frames items and results: lines (one item per line in, one result line out per item) or frames (binary-safe: length-prefixed, with the item id, attempt and a success or failure status).")
    var serveFormat: ServeHandler.Format = .lines

    @Flag(help: "Return each item as its result and print it, one line per item.")
    var echo = false

    @Option(help: "Seconds a SIGTERM drain lets running items finish.")
    var drainDeadline: Double = 30

    @Option(help: "Seconds one item may run. Past it an --exec or --serve handler is killed (its whole process group) and the item fails with \"timed out\", retried per the queue's policy. An item sent with its own `send --item-timeout` gets the smaller of the two. Default: no limit.")
    var itemTimeout: Double?

    @Option(help: "Heartbeat interval towards the broker, in milliseconds (shorter if the broker asks for it).")
    var heartbeatMs: Int32 = 1000

    @Option(help: "Heartbeat intervals of broker silence after which the worker registers again, until the broker's welcome gives its own window.")
    var liveness: Int32 = 3

    @Option(help: "Write this worker's name to this file once it is registered with the broker, then refresh the file's modification time every heartbeat while the worker runs (a liveness probe can check it).")
    var readyFile: String?

    /// `noop` or `sleep:MS`: the handlers `drover bench` measures with.
    @Option(help: .hidden)
    var benchHandler: String?

    @OptionGroup var key: ClientKeyOption

    @Option(help: ArgumentHelp("The broker's public certificate (its NAME.pub), for a broker that uses keys.", valueName: "file"))
    var brokerKey: String?

    @Option(help: ArgumentHelp("The controller's public certificate (its NAME.pub), for a controller that uses keys (with --control).", valueName: "file"))
    var controllerKey: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateEndpoint(broker, flag: "--broker", binding: false)
        if let control { try validateEndpoint(control, flag: "--control", binding: false) }
        guard [exec != nil, serve != nil, echo, benchHandler != nil].filter({ $0 }).count == 1 else {
            throw ValidationError("give exactly one handler: --exec 'COMMAND' (a process per item), --serve 'COMMAND' (long-lived processes) or --echo")
        }
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        guard lookahead == "auto" || Int(lookahead).map({ (0...10_000).contains($0) }) == true else {
            throw ValidationError("--lookahead must be 'auto' or a number of items from 0 to 10000; got '\(lookahead)'")
        }
        guard drainDeadline >= 0 && drainDeadline <= 4_000_000 else { throw ValidationError("--drain-deadline must be a number of seconds from 0 to 4,000,000") }
        _ = try itemTimeoutMilliseconds(itemTimeout)
        guard heartbeatMs >= 10, liveness >= 2 else { throw ValidationError("--heartbeat-ms must be at least 10 and --liveness at least 2") }
        if let problem = QueueName.problem(queue) { throw ValidationError("--queue: \(problem)") }
        _ = try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
        // --controller-key without --control is let be: DROVER_CONTROLLER_KEY may be set for a shell.
        if controllerKey != nil && control != nil { _ = try key.security(serverKey: controllerKey, serverFlag: "--controller-key") }
    }

    func run() throws {
        let logger = global.makeLogger(role: "worker")
        let handler: any WorkHandler
        if let benchHandler {
            if benchHandler == "noop" {
                handler = NoopHandler()
            } else if benchHandler.hasPrefix("sleep:"), let ms = UInt32(benchHandler.dropFirst(6)) {
                handler = SleepHandler(milliseconds: ms)
            } else if benchHandler == "payload-ms" {
                handler = PayloadSleepHandler()
            } else {
                throw ValidationError("--bench-handler takes noop, sleep:MS or payload-ms")
            }
        } else if let exec {
            try ExecHandler.check(exec, flag: "--exec")
            handler = ExecHandler(command: exec)
        } else if let serve {
            try ExecHandler.check(serve, flag: "--serve")
            handler = ServeHandler(command: serve, format: serveFormat, logger: logger)
        } else {
            handler = EchoHandler()
        }
        var options = WorkerOptions(broker: broker)
        options.control = control
        options.queue = queue
        options.threads = threads
        options.lookahead = Int(lookahead)
        if let name { options.name = name }
        options.drainDeadlineMilliseconds = UInt32(drainDeadline * 1000)
        options.itemTimeoutMilliseconds = try itemTimeoutMilliseconds(itemTimeout)
        options.heartbeatMilliseconds = heartbeatMs
        options.liveness = liveness
        options.readyFile = readyFile
        options.security = try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
        if controllerKey != nil && control != nil { options.controlSecurity = try key.security(serverKey: controllerKey, serverFlag: "--controller-key") }
        let worker = Worker(options: options, handler: handler, logger: logger)
        let exit = try runHandlingSignals(worker)
        switch exit {
        case .drained(let reason):
            logger.info("worker exited", metadata: ["reason": "\(reason)"])
        case .stopped:
            throw ExitCode(2)
        case .deadlinePassed(let abandoned):
            logger.warning("worker exited after its drain deadline", metadata: ["handed-back": "\(abandoned)"])
            throw ExitCode(3)
        }
    }
}

extension ServeHandler.Format: ExpressibleByArgument {}
