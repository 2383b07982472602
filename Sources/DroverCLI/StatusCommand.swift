import ArgumentParser
import Drover
import DroverDispatch
import DroverProtocol
import Foundation
import ZeroMQ

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the fleet: queues, workers and counters, from the broker (or through the controller).",
        discussion: """
        Examples:
          drover status --broker tcp://broker-host:5555
          drover status --controller tcp://controller-host:5557 --json
        """
    )

    @Option(help: "Ask the broker directly.")
    var broker: String?

    @Option(help: "Ask the controller (its --bind), which relays the broker's last status.")
    var controller: String?

    @Flag(help: "Print the status as JSON.")
    var json = false

    @Option(help: "Seconds to wait for an answer.")
    var timeout: Double = 5

    @OptionGroup var key: ClientKeyOption

    @Option(help: ArgumentHelp("The broker's public certificate (its NAME.pub), for a broker that uses keys.", valueName: "file"))
    var brokerKey: String?

    @Option(help: ArgumentHelp("The controller's public certificate (its NAME.pub), for a controller that uses keys.", valueName: "file"))
    var controllerKey: String?

    @OptionGroup var global: GlobalOptions

    var security: ClientSecurity? {
        get throws {
            broker != nil ? try key.security(serverKey: brokerKey, serverFlag: "--broker-key")
                          : try key.security(serverKey: controllerKey, serverFlag: "--controller-key")
        }
    }

    func validate() throws {
        guard (broker == nil) != (controller == nil) else { throw ValidationError("give one of --broker or --controller") }
        if let broker { try validateEndpoint(broker, flag: "--broker", binding: false) }
        if let controller { try validateEndpoint(controller, flag: "--controller", binding: false) }
        _ = try security
    }

    func run() throws {
        _ = global.makeLogger(role: "status")
        let client = try ControlClient(endpoint: broker ?? controller!, role: broker != nil ? "broker" : "controller",
                                       timeoutSeconds: timeout, context: ZMQContext(), security: try security)
        let status = try client.status()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            writeOutput(String(decoding: try encoder.encode(status), as: UTF8.self))
            return
        }
        writeOutput("fleet: \(status.fleet.phase) (epoch \(status.fleet.epoch)); \(status.itemsHeld) items held")
        if let held = status.bytesHeld, let inMemory = status.bytesInMemory, let limit = status.memoryLimitBytes {
            func mib(_ b: Int) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
            writeOutput("payloads: \(mib(held)) held, \(mib(inMemory)) of them in memory (limit \(mib(limit)))")
        }
        writeOutput("queues:")
        for q in status.queues {
            writeOutput("  \(q.name): \(q.queued) queued, \(q.leased) running, \(q.retrying) waiting to retry, \(q.dead) dead, \(q.workers) workers")
        }
        writeOutput("workers:")
        for w in status.workers {
            writeOutput("  \(w.name) on \(w.queue): \(w.threads) threads, \(w.leased) leased, \(w.completed) completed\(w.draining ? ", draining" : "")")
            if w.handlerRestarts > 0 {
                let dying = w.handlerDeathsInARow >= HandlerHealth.keepsDyingAfter ? "; KEEPS DYING, \(w.handlerDeathsInARow) in a row" : ""
                writeOutput("    handler processes restarted \(w.handlerRestarts) times\(dying); latest: \(w.handlerProblem ?? "")")
            }
        }
        let c = status.counters
        writeOutput("counters: accepted \(c.accepted), completed \(c.completed), retried \(c.retried), dead-lettered \(c.deadLettered), "
                    + "rejected \(c.rejected), duplicates dropped \(c.duplicates), redelivered \(c.redelivered), "
                    + "handed back \(c.handedBack), reclaimed from workers that registered again \(c.reclaimed), stale outcomes rejected \(c.staleOutcomes)")
        if let j = status.journal {
            if j.diskFull { writeOutput("DISK FULL: the journal's disk has no room for its next segment; new items are refused until completed items free space") }
            writeOutput("journal: \(j.directory), \(j.segments) segment\(j.segments == 1 ? "" : "s") (\(j.bytesOnDisk >> 20) MiB on disk), "
                        + String(format: "%.0f fsyncs/s, %.1f items per fsync, fsync mean %.0f µs (max %.1f ms); ",
                                 j.syncsPerSecond, j.itemsPerSync, j.meanSyncMicroseconds, Double(j.maxSyncMicroseconds) / 1000)
                        + "\(j.recoveredItems) items recovered at start in \(String(format: "%.2f", j.recoverySeconds)) s")
        } else if status.counters.accepted > 0 || status.itemsHeld > 0 {
            writeOutput("journal: none (--in-memory): a stop or crash of the broker loses the items it holds")
        }
    }
}
