import Foundation
import Testing

@Suite("Flags from DROVER_* environment variables")
struct EnvironmentTests {
    @Test("a flag comes from its variable, and the command line wins over it")
    func variableAndPrecedence() throws {
        let sandbox = try Sandbox("env")
        defer { sandbox.tearDown() }
        let fromEnvironment = try sandbox.run(["send", "x"], timeout: 30,
                                              environment: ["DROVER_BROKER": "tcp://127.0.0.1:1", "DROVER_TIMEOUT": "1"])
        #expect(fromEnvironment.status != 0)
        #expect(fromEnvironment.stderr.contains("no answer from the broker at tcp://127.0.0.1:1 within 1 s"))

        let overridden = try sandbox.run(["send", "--broker", "tcp://127.0.0.1:2", "x"], timeout: 30,
                                         environment: ["DROVER_BROKER": "tcp://127.0.0.1:1", "DROVER_TIMEOUT": "1"])
        #expect(overridden.stderr.contains("tcp://127.0.0.1:2"))
        #expect(!overridden.stderr.contains("tcp://127.0.0.1:1 "))
    }

    @Test("a switch variable with a value that is not yes or no is refused by name")
    func badSwitch() throws {
        let sandbox = try Sandbox("env-switch")
        defer { sandbox.tearDown() }
        let result = try sandbox.run(["send", "--broker", "tcp://127.0.0.1:1", "x"], environment: ["DROVER_WAIT": "maybe"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("DROVER_WAIT=maybe: --wait is a switch"))
    }

    @Test("a bad value from a variable gets the flag's own error")
    func badValue() throws {
        let sandbox = try Sandbox("env-value")
        defer { sandbox.tearDown() }
        let result = try sandbox.run(["worker", "--echo"], environment: ["DROVER_BROKER": "localhost:5555"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("has no transport"))
    }

    @Test("drover --help names a variable for every flag of every subcommand")
    func helpListsEveryVariable() throws {
        let sandbox = try Sandbox("env-help")
        defer { sandbox.tearDown() }
        let root = try sandbox.run(["--help"])
        #expect(root.status == 0)
        var checked = 0
        for command in ["broker", "controller", "worker", "send", "exit", "status", "up", "bench", "dlq list"] {
            let help = try sandbox.run(command.split(separator: " ").map(String.init) + ["--help"])
            let options = help.stdout.components(separatedBy: "OPTIONS:").last ?? ""
            for line in options.split(separator: "\n") where line.hasPrefix("  --") && !line.hasPrefix("  --version") {
                let flag = line.split(separator: " ")[0].split(separator: "/")[0]
                let variable = "DROVER_" + flag.dropFirst(2).uppercased().replacingOccurrences(of: "-", with: "_")
                #expect(root.stdout.contains(variable), "drover --help does not list \(variable) (\(command) \(flag))")
                checked += 1
            }
        }
        #expect(checked > 40)
    }
}

extension ProcessTests {
    @Suite("A fleet configured only through the environment")
    struct EnvironmentFleetTests {
        @Test("broker, worker and send take every setting from DROVER_* variables")
        func fleetFromEnvironment() throws {
            let sandbox = try Sandbox("env-fleet")
            defer { sandbox.tearDown() }
            let ready = sandbox.path("broker.ready")
            let broker = try sandbox.start("broker", ["broker"], environment: ["DROVER_BIND": "tcp://127.0.0.1:*", "DROVER_READY_FILE": ready])
            let endpoint = try sandbox.waitForFile(ready, process: broker)[0]
            let workerReady = sandbox.path("worker.ready")
            let worker = try sandbox.start("worker", ["worker"], environment: [
                "DROVER_BROKER": endpoint, "DROVER_EXEC": "tr a-z A-Z", "DROVER_THREADS": "3",
                "DROVER_NAME": "env-worker", "DROVER_READY_FILE": workerReady])
            _ = try sandbox.waitForFile(workerReady, process: worker)
            let send = try sandbox.run(["send", "one", "two"], environment: ["DROVER_BROKER": endpoint, "DROVER_WAIT": "true"])
            #expect(send.status == 0, "\(send.stderr)")
            #expect(Set(send.lines) == ["ONE", "TWO"])
            let status = try sandbox.run(["status", "--json"], environment: ["DROVER_BROKER": endpoint])
            #expect(status.stdout.contains("\"threads\" : 3") || status.stdout.contains("\"threads\":3"), "\(status.stdout)")
        }
    }
}
