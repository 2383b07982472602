import ArgumentParser
import CDroverShims
import DroverProtocol
import Foundation

/// `drover`: one executable, one subcommand per role.
@main
struct DroverTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drover",
        abstract: "A worker fleet over ZeroMQ: a broker, workers on any number of hosts, a controller for coordinated exit.",
        discussion: """
        Quick start on one machine:
          drover up --workers 2 --threads 2 --exec 'tr a-z A-Z'
          drover send --broker tcp://127.0.0.1:5555 --wait hello world
          drover exit --controller tcp://127.0.0.1:5557
        """,
        version: droverVersion,
        subcommands: [
            BrokerCommand.self, ControllerCommand.self, WorkerCommand.self,
            SendCommand.self, ExitCommand.self, StatusCommand.self, DeadLetterCommand.self, UpCommand.self,
            JournalCommand.self, KeygenCommand.self, BenchCommand.self, BenchRawCommand.self,
        ]
    )

    /// Adds flags from `DROVER_*` environment variables (see ``EnvironmentDefaults``), and lists
    /// them under `drover --help`, then runs as ArgumentParser would.
    static func main() {
        if let parent = ProcessInfo.processInfo.environment[ChildProcess.parentVariable].flatMap(Int32.init) {
            unsetenv(ChildProcess.parentVariable)  // not for this process's own children
            drover_terminate_with_parent(parent)
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        if ["--help", "-h", "help"].contains(arguments.first ?? ""), arguments.count == 1 {
            print(helpMessage(columns: nil) + "\n\n" + environmentHelp())
            return
        }
        do {
            main(try EnvironmentDefaults.apply(to: arguments, environment: ProcessInfo.processInfo.environment))
        } catch {
            exit(withError: ValidationError("\(error)"))
        }
    }

    static func environmentHelp() -> String {
        """
        ENVIRONMENT:
          Every flag can also be set by an environment variable: DROVER_ and the flag's name
          in capitals with - as _ (--broker is DROVER_BROKER, --max-item-size is
          DROVER_MAX_ITEM_SIZE). A flag on the command line wins. Switches (--wait) are on
          for 1, true or yes. For --queue-max-deliveries, separate several NAME=N with commas.
        \(EnvironmentDefaults.listing())
        """
    }
}

/// The version `drover --version` prints.
let droverVersion = "0.1.0 (wire protocol v\(ProtocolVersion.current))"
