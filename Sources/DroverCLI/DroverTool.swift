import ArgumentParser

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
            BenchCommand.self, BenchRawCommand.self,
        ]
    )
}

/// The version `drover --version` prints.
let droverVersion = "0.1.0 (wire protocol v1)"
