import DroverDispatch
import DroverProtocol
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// The broker: one ROUTER endpoint for producers, workers and the controller.
///
/// Threads: ``run()`` owns the ROUTER socket and the ``Dispatcher`` on the calling thread;
/// ``stop()`` may be called from any thread and wakes it through an eventfd.
public final class Broker: Sendable {
    public let options: BrokerOptions
    private let logger: Logger
    private let context: ZMQContext
    private let wakeup = Wakeup()
    private let stopping = Atomic<Bool>(false)

    private let ownsContext: Bool

    /// A broker with a context of its own, terminated when ``run()`` returns so that its last
    /// replies are flushed before the process ends.
    public convenience init(options: BrokerOptions, logger: Logger) {
        self.init(options: options, context: ZMQContext(), ownsContext: true, logger: logger)
    }

    /// A broker on a shared context, which the caller terminates.
    public convenience init(options: BrokerOptions, context: ZMQContext, logger: Logger) {
        self.init(options: options, context: context, ownsContext: false, logger: logger)
    }

    private init(options: BrokerOptions, context: ZMQContext, ownsContext: Bool, logger: Logger) {
        self.options = options
        self.context = context
        self.ownsContext = ownsContext
        self.logger = logger
    }

    /// Asks ``run()`` to return. Safe from any thread.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
    }

    /// Binds and serves until ``stop()``. Throws when the endpoint cannot be bound.
    public func run() throws {
        // The ZAP handler first: the socket refuses everyone until it is bound.
        let serverGuard = try ServerGuard(options.security, context: context, logger: logger)
        defer { serverGuard.stop() }
        // Bounded linger: last replies (a goodbye acknowledgement) go out as the broker stops.
        let socket = try ZMQSocket(context, type: .router, linger: 500)
        try options.security.configure(socket)
        let monitor = try socket.monitor(ServerWatch.events)
        try socket.set(.routerMandatory(true))
        try socket.set(.routerHandover(true))
        try socket.set(.maxMessageSize(bytes: options.maxFrameBytes))
        try socket.set(.sendHighWaterMark(BrokerOptions.sendHighWaterMark))
        try socket.set(.receiveHighWaterMark(BrokerOptions.receiveHighWaterMark))
        try socket.set(.heartbeatInterval(milliseconds: options.heartbeatMilliseconds))
        try socket.set(.heartbeatTimeout(milliseconds: options.heartbeatMilliseconds * options.liveness))
        do {
            try socket.bind(options.bind)
        } catch where error == .addressInUse {
            throw DroverError.cannotBind(options.bind, "the address is in use (is another broker running? pick another port with --bind)")
        } catch {
            throw DroverError.cannotBind(options.bind, error.reason)
        }
        // Replay the journal before anyone is served; a producer that connects meanwhile waits.
        var dispatcher = Dispatcher(limits: options.dispatcherLimits)
        var opened: BrokerJournal?
        if let directory = options.dataDirectory {
            opened = try BrokerJournal.open(directory, options: options, into: &dispatcher, logger: logger)
            let store = opened!.store
            dispatcher.readPayload = { segment, offset, length in store.readPayload(segment: segment, offset: offset, length: length) }
            opened!.store.start(onSynced: { [wakeup] in wakeup.signal() })
        } else {
            logger.notice("in memory only (--in-memory): a stop or crash of this broker loses every item it holds")
        }
        let journal = opened?.store
        defer { journal?.stop() }
        let endpoint = try socket.lastEndpoint()
        logger.info("broker listening", metadata: [
            "endpoint": "\(endpoint)", "max-item-bytes": "\(options.maxItemBytes)",
            "data-dir": "\(options.dataDirectory ?? "none (in memory)")", "items-held": "\(dispatcher.itemsHeld)",
            "memory-limit": "\(options.memoryLimitBytes >> 20) MiB", "max-bytes": "\(options.maxHeldBytes == 0 ? "none" : "\(options.maxHeldBytes >> 20) MiB")"])
        if let path = options.readyFile { try writeReadyFile(path, lines: [endpoint]) }

        var loop = BrokerLoop(options: options, socket: socket, logger: logger, dispatcher: dispatcher, journal: journal)
        loop.serverGuard = serverGuard
        loop.serverWatch = ServerWatch(guarding: serverGuard, logger: logger)
        options.security.logMode(logger, anyone: "anyone who can reach \(options.bind) may submit items, take work and read results")
        if let opened { loop.recovered = (opened.recoveredItems, opened.recoverySeconds) }
        var poller = ZMQPoller()
        let socketIndex = poller.add(socket)
        let wakeIndex = poller.add(fileDescriptor: wakeup.fileDescriptor)
        let monitorIndex = poller.add(monitor)
        let heartbeat = Int64(options.heartbeatMilliseconds)
        var nextTick = monotonicMilliseconds() + heartbeat

        while !stopping.load(ordering: .acquiring) {
            let wakeAt = min(nextTick, loop.dispatcher.nextRetryDue ?? nextTick)
            let ready = try poller.poll(timeout: Int(max(0, wakeAt - monotonicMilliseconds())))
            if ready[wakeIndex] { wakeup.clear() }
            if ready[socketIndex] { try loop.receiveAvailable() }
            if ready[monitorIndex] { try loop.serverWatch?.drain(monitor, now: monotonicMilliseconds()) }
            let now = monotonicMilliseconds()
            loop.dispatcher.releaseDueRetries(now: now)
            if now >= nextTick {
                loop.tick(now: now)
                nextTick = now + heartbeat
            }
            try loop.flush()
            if let failure = loop.journalFailure {
                // Linux may have dropped the pages that failed to reach the disk: retrying would
                // report as durable what is not. Stop; the next start replays what is on disk.
                loop.refuseUnsynced(failure)
                logger.critical("the journal failed; refusing items and stopping (restart the broker to replay what is on disk)",
                                metadata: ["error": "\(failure)"])
                socket.stopMonitor()
                monitor.close()
                socket.close()
                serverGuard.stop()
                if ownsContext { context.terminate() }
                throw DroverError.cannotWrite(options.dataDirectory ?? "", "the journal failed: \(failure.detail) (\(failure.operation) \(failure.path))")
            }
        }
        // Make the last records durable, then send what waited for them.
        journal?.stop()
        loop.releaseSynced()
        try? loop.flush()
        let held = loop.dispatcher.itemsHeld
        logger.info("broker stopping", metadata: [
            "items-held": "\(held)",
            "note": "\(held == 0 ? "nothing held" : journal == nil ? "this in-memory broker keeps no journal: the items it held are gone" : "the journal keeps them for the next start")",
        ])
        socket.stopMonitor()
        monitor.close()
        socket.close()
        serverGuard.stop()
        if ownsContext { context.terminate() }
    }
}
