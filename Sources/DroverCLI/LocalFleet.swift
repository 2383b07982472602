import ArgumentParser
import Drover
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// The fleet `drover up` started: a broker, a controller and workers as child processes, with
/// the same lifecycle as every role. A graceful stop asks the controller for a fleet exit (so
/// workers drain and confirm); the run ends when every worker has exited, then the controller
/// and the broker are stopped, in that order. Stopping now kills every process.
final class LocalFleet: DroverService, @unchecked Sendable {
    // `children` and `workers` are used on the thread that calls `run()` only; other threads
    // touch nothing but `requests`.
    private let children: [ChildProcess]
    private let workers: [ChildProcess]
    private let commandEndpoint: String
    /// The keys `drover exit` would use: an admin's, with the controller's public key.
    private let exitSecurity: ClientSecurity?
    private let deadlineMilliseconds: UInt32
    private let logger: Logger
    private let requests = Mutex<(graceful: Bool, now: Bool)>((false, false))

    /// How often the run looks at its children and at requests.
    static let checkEveryMicroseconds: UInt32 = 50_000

    init(children: [ChildProcess], workers: [ChildProcess], commandEndpoint: String, exitSecurity: ClientSecurity?,
         deadlineMilliseconds: UInt32, logger: Logger) {
        self.exitSecurity = exitSecurity
        self.children = children
        self.workers = workers
        self.commandEndpoint = commandEndpoint
        self.deadlineMilliseconds = deadlineMilliseconds
        self.logger = logger
    }

    func beginGracefulStop(reason: String) { requests.withLock { $0.graceful = true } }

    func stopNow() { requests.withLock { $0.now = true } }

    /// Waits until every worker has exited (after `drover exit` from anywhere, or a graceful
    /// stop here), then stops the controller and the broker. Throws a failing exit code when a
    /// worker failed, a core process died, or the fleet was stopped at once.
    func run() throws {
        var exitRequested = false
        while workers.contains(where: \.running) {
            let (graceful, now) = requests.withLock { $0 }
            if now {
                logger.warning("second signal: stopping every process at once")
                for child in children { child.signal(SIGKILL) }
                stop(children)
                throw ExitCode(130)
            }
            if graceful && !exitRequested {
                exitRequested = true
                logger.notice("shutting the fleet down (Ctrl-C again to stop at once)")
                requestExit()
            }
            for child in children.prefix(2) where !child.running {
                logger.error("\(child.role) exited unexpectedly; stopping the fleet", metadata: ["status": "\(child.poll() ?? -1)"])
                stop(children)
                throw ExitCode.failure
            }
            usleep(Self.checkEveryMicroseconds)
        }
        var failed = false
        for worker in workers where worker.poll() != 0 {
            failed = true
            logger.warning("\(worker.role) exited with status \(worker.poll() ?? -1)")
        }
        stop(Array(children.prefix(2)))
        writeOutput("drover fleet is down")
        if failed { throw ExitCode.failure }
    }

    /// Asks the controller for a fleet exit, on a thread of its own so that a second Ctrl-C is
    /// still seen by the run.
    private func requestExit() {
        let endpoint = commandEndpoint, deadline = deadlineMilliseconds, logger = logger, security = exitSecurity
        Thread.detachNewThread {
            do {
                let client = try ControlClient(endpoint: endpoint, role: "controller", timeoutSeconds: 5, context: ZMQContext(), security: security)
                let result = try client.exit(deadlineMilliseconds: deadline, wait: true) { event in
                    if event["event"] == "worker-exited" {
                        logger.info("worker exited", metadata: ["worker": "\(event["worker"] ?? "?")", "completed": "\(event["completed"] ?? "0")"])
                    }
                }
                if !result.succeeded { logger.error("fleet exit incomplete", metadata: ["report": "\(result.report)"]) }
            } catch {
                logger.error("could not ask the controller to exit", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stops `processes`, the last started first.
    private func stop(_ processes: [ChildProcess]) {
        for child in processes.reversed() { child.stop(within: 5) }
    }
}
