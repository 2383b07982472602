import ArgumentParser
import Drover

struct ControllerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the controller: publishes fleet state and carries out `drover exit`.",
        discussion: """
        Workers subscribe to --publish (their --control); `drover exit` and `drover status` talk to --bind. A restarted controller starts a new run: its state is newer than any earlier exit.

        Example:
          drover controller --broker tcp://broker-host:5555 --publish tcp://*:5556 --bind tcp://*:5557
        """
    )

    @Option(help: "The broker to tell about fleet state.")
    var broker: String

    @Option(help: "Endpoint to publish fleet state on, for workers' --control.")
    var publish = "tcp://*:5556"

    @Option(help: "Endpoint for `drover exit` and `drover status`.")
    var bind = "tcp://*:5557"

    @Option(help: "Write the bound endpoints (publish, then commands) to this file once listening.")
    var readyFile: String?

    @OptionGroup var keys: ServerKeyOptions

    @Option(help: ArgumentHelp("The broker's public certificate (its NAME.pub), for a broker that uses keys; --key is then also this controller's key towards the broker (role controller).", valueName: "file"))
    var brokerKey: String?

    @OptionGroup var global: GlobalOptions

    /// Its keys towards the broker: its own --key with --broker-key.
    var brokerSecurity: ClientSecurity? {
        get throws { try clientSecurity(key: keys.key, serverKey: brokerKey, serverFlag: "--broker-key") }
    }

    func validate() throws {
        try validateEndpoint(broker, flag: "--broker", binding: false)
        try validateEndpoint(publish, flag: "--publish", binding: true)
        try validateEndpoint(bind, flag: "--bind", binding: true)
        _ = try keys.security()
        _ = try brokerSecurity
    }

    func run() throws {
        var options = ControllerOptions(broker: broker)
        options.publish = publish
        options.bind = bind
        options.readyFile = readyFile
        options.security = try keys.security()
        options.brokerSecurity = try brokerSecurity
        let logger = global.makeLogger(role: "controller")
        let controller = Controller(options: options, logger: logger)
        let reloads = reloadOnHangup(options.security.authorizedKeys, logger: logger)
        try withExtendedLifetime(reloads) { try runHandlingSignals(controller) }
    }
}
