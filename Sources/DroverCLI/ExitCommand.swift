import ArgumentParser
import Drover
import Foundation
import ZeroMQ

struct ExitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exit",
        abstract: "Shut the whole fleet down: workers stop taking work, finish what is running, hand back the rest, and exit.",
        discussion: """
        Prints each worker as it leaves and exits 0 once every worker has finished its running items and confirmed; exits 1, naming them, when a worker went silent instead, had to hand running items back at the deadline, or was still running past the deadline. The broker keeps the items handed back. Restart the controller to begin a new run.

        Example:
          drover exit --controller tcp://controller-host:5557 --deadline 60
        """
    )

    @Option(help: "The controller's command endpoint (its --bind).")
    var controller: String

    @Option(help: "Seconds each worker may spend finishing running items.")
    var deadline: Double = 30

    @Flag(inversion: .prefixedNo, help: "Wait until every worker has left (default), or return once the exit is published.")
    var wait = true

    @Option(help: "Seconds to wait for the controller's first answer.")
    var timeout: Double = 5

    @OptionGroup var key: ClientKeyOption

    @Option(help: ArgumentHelp("The controller's public certificate (its NAME.pub), for a controller that uses keys (exit needs an admin key).", valueName: "file"))
    var controllerKey: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try validateEndpoint(controller, flag: "--controller", binding: false)
        guard deadline >= 0, deadline <= 86_400 else { throw ValidationError("--deadline must be between 0 and 86400 seconds") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        _ = try key.security(serverKey: controllerKey, serverFlag: "--controller-key")
    }

    func run() throws {
        _ = global.makeLogger(role: "exit")
        let client = try ControlClient(endpoint: controller, role: "controller", timeoutSeconds: timeout, context: ZMQContext(),
                                       security: try key.security(serverKey: controllerKey, serverFlag: "--controller-key"))
        let result = try client.exit(deadlineMilliseconds: UInt32(deadline * 1000), wait: wait) { event in
            switch event["event"] {
            case "exit-published":
                writeOutput("exit published (epoch \(event["epoch"] ?? "?")); workers have \(formatDeadline(event["deadline-ms"])) to finish running items")
            case "worker-exited":
                let how = event["how"] == "bye" ? "exited" : "went \(event["how"] ?? "silent") without confirming"
                writeOutput("worker \(event["worker"] ?? "?") \(how): \(event["completed"] ?? "0") items completed, \(event["handed-back"] ?? "0") handed back")
            default:
                writeOutput(event.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))
            }
                    }
        guard wait else { return }
        if result.succeeded {
            writeOutput("fleet exited: \(result.report["confirmed"] ?? "0") workers confirmed; \(result.report["queued"] ?? "0") items remain queued in the broker")
        } else {
            var reasons: [String] = []
            if let error = result.report["error"] { reasons.append(error) }
            if let remaining = result.report["remaining"], !remaining.isEmpty { reasons.append("still running past the deadline: \(remaining)") }
            if let silent = result.report["unconfirmed"], !silent.isEmpty { reasons.append("left without confirming: \(silent)") }
            if let late = result.report["past-deadline"], !late.isEmpty {
                reasons.append("handed running items back when the deadline passed: \(late)")
            }
            writeError("fleet exit incomplete: \(reasons.joined(separator: "; "))\n")
            throw ExitCode.failure
        }
    }
}

private func formatDeadline(_ milliseconds: String?) -> String {
    guard let ms = milliseconds.flatMap(Double.init) else { return "?" }
    return "\(ms / 1000) s"
}
