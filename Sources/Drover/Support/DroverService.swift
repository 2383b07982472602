/// The one lifecycle every long-running role has: run until done, begin a graceful stop, stop
/// now. `drover` maps signals onto it once for every role (the first SIGTERM or Ctrl-C begins a
/// graceful stop, a second one stops at once); a program that embeds a role does the same with
/// its own triggers. After swift-service-lifecycle's `Service` and graceful shutdown, for
/// roles that run on a dedicated thread rather than in a task.
public protocol DroverService: AnyObject, Sendable {
    /// How a run ended.
    associatedtype Exit
    /// Serves on the calling thread until the role is done. Blocks.
    func run() throws -> Exit
    /// Begins a graceful stop: the role finishes what it owes (a worker hands unstarted items
    /// back and lets running ones finish) and then ``run()`` returns. Safe from any thread.
    func beginGracefulStop(reason: String)
    /// Stops at once: ``run()`` returns as soon as it can, leaving the rest to the fleet (a
    /// worker's items are redelivered). Safe from any thread.
    func stopNow()
}

extension Broker: DroverService {
    /// The broker holds the fleet's items and owes nothing more on the way out: it stops.
    public func beginGracefulStop(reason: String) { stop() }
    public func stopNow() { stop() }
}

extension Controller: DroverService {
    /// The controller stops publishing; the fleet's state stays with the broker.
    public func beginGracefulStop(reason: String) { stop() }
    public func stopNow() { stop() }
}

extension Worker: DroverService {
    /// Drains: no more work, unstarted items handed back, running ones finished.
    public func beginGracefulStop(reason: String) { drain(reason: reason) }
}
