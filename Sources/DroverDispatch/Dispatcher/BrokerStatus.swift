import DroverProtocol

/// What `drover status` shows and what the controller reads during an exit: the broker's books,
/// sent as JSON in a `status-reply` message (see docs/PROTOCOL.md).
public struct BrokerStatus: Codable, Sendable, Equatable {
    public struct Fleet: Codable, Sendable, Equatable {
        public var phase: String
        public var epoch: UInt64
    }

    public struct Queue: Codable, Sendable, Equatable {
        public var name: String
        public var queued: Int
        public var leased: Int
        /// Failed items waiting out their retry backoff.
        public var retrying: Int
        /// Items in the dead-letter store.
        public var dead: Int
        public var workers: Int
    }

    public struct Worker: Codable, Sendable, Equatable {
        public var name: String
        public var queue: String
        public var threads: Int
        public var credit: Int
        public var leased: Int
        public var completed: Int
        public var draining: Bool
        public var silentMilliseconds: Int64
        /// Handler processes replaced (`--serve`: exited, crashed or timed out) since the worker started.
        public var handlerRestarts: UInt32 = 0
        /// Of those, how many in a row without an answered item between.
        public var handlerDeathsInARow: UInt32 = 0
        /// Why the latest one ended; absent when none has.
        public var handlerProblem: String? = nil
    }

    public struct Departed: Codable, Sendable, Equatable {
        public var name: String
        public var queue: String
        /// `bye`, `silent` or `unreachable`.
        public var how: String
        /// The worker's own reason, for `bye`.
        public var reason: String
        /// The `bye` code (``ByeCode``), for `bye`: 2 means it missed its drain deadline.
        public var byeCode: UInt8?
        public var completed: Int
        public var itemsReturned: Int
        /// Milliseconds since it left.
        public var ago: Int64
    }

    /// The broker's journal; absent for a broker run `--in-memory`.
    public struct Journal: Codable, Sendable, Equatable {
        public var directory: String
        /// Segment files on disk, and their size together (preallocated).
        public var segments: Int
        public var bytesOnDisk: Int
        /// Bytes of records written since the broker started.
        public var bytesWritten: UInt64
        /// Syncs (`fdatasync` group commits) since the broker started, and per second over the
        /// last heartbeat interval.
        public var syncs: Int
        public var syncsPerSecond: Double
        /// Items first accepted in the records the syncs covered, since the broker started.
        public var itemsSynced: Int = 0
        /// The disk has no room for the next segment: new items are refused until it does.
        public var diskFull: Bool = false
        /// Items whose payload was dropped from memory (read back when dispatched), since the start.
        public var spilledItems: Int = 0
        /// Items first accepted per sync, over the last heartbeat interval (since the start when
        /// none happened in it).
        public var itemsPerSync: Double
        public var meanSyncMicroseconds: Double
        public var maxSyncMicroseconds: UInt64
        /// What the broker recovered at start.
        public var recoveredItems: Int
        public var recoverySeconds: Double

        public init(directory: String, segments: Int, bytesOnDisk: Int, bytesWritten: UInt64, syncs: Int, syncsPerSecond: Double,
                    itemsPerSync: Double, meanSyncMicroseconds: Double, maxSyncMicroseconds: UInt64, recoveredItems: Int, recoverySeconds: Double) {
            self.directory = directory
            self.segments = segments
            self.bytesOnDisk = bytesOnDisk
            self.bytesWritten = bytesWritten
            self.syncs = syncs
            self.syncsPerSecond = syncsPerSecond
            self.itemsPerSync = itemsPerSync
            self.meanSyncMicroseconds = meanSyncMicroseconds
            self.maxSyncMicroseconds = maxSyncMicroseconds
            self.recoveredItems = recoveredItems
            self.recoverySeconds = recoverySeconds
        }
    }

    /// How the broker admits peers.
    public struct Security: Codable, Sendable, Equatable {
        /// "keys" (CURVE, authorized keys only), "loopback" (no keys, loopback peers only) or
        /// "insecure" (no keys, anyone who can reach the port).
        public var mode: String
        /// Keys in `--authorized-keys` now.
        public var authorizedKeys: Int
        /// Handshakes refused (unknown key, or a peer beyond loopback without keys), and
        /// messages refused for their key's role or a revoked key, since the start.
        public var refusedHandshakes: Int
        public var refusedMessages: Int

        public init(mode: String, authorizedKeys: Int, refusedHandshakes: Int, refusedMessages: Int) {
            self.mode = mode
            self.authorizedKeys = authorizedKeys
            self.refusedHandshakes = refusedHandshakes
            self.refusedMessages = refusedMessages
        }
    }

    public var fleet: Fleet
    public var queues: [Queue]
    public var workers: [Worker]
    public var departed: [Departed]
    public var counters: Dispatcher.Counters
    public var itemsHeld: Int
    public var journal: Journal? = nil
    /// Payload bytes of the items held (memory or disk), of those in memory, and the memory limit.
    public var bytesHeld: Int? = nil
    public var bytesInMemory: Int? = nil
    public var memoryLimitBytes: Int? = nil
    public var security: Security? = nil
}

extension Dispatcher {
    /// A snapshot of the books, for `drover status` and the controller.
    public func status(now: Int64) -> BrokerStatus {
        var leasedByQueue: [String: Int] = [:]
        var workersByQueue: [String: Int] = [:]
        for record in workers.values {
            workersByQueue[record.queue, default: 0] += 1
            leasedByQueue[record.queue, default: 0] += record.leased
        }
        var retryingByQueue: [String: Int] = [:]
        for entry in retries { retryingByQueue[items[entry.slot].item.queue, default: 0] += 1 }
        var deadByQueue: [String: Int] = [:]
        for slot in deadOrder { deadByQueue[items[slot].item.queue, default: 0] += 1 }
        let names = Set(queues.keys).union(workersByQueue.keys).union(retryingByQueue.keys).union(deadByQueue.keys)
        return BrokerStatus(
            fleet: .init(phase: fleet.phase == .running ? "running" : "exiting", epoch: fleet.epoch),
            queues: names.sorted().map { name in
                .init(name: name, queued: queues[name]?.items.count ?? 0, leased: leasedByQueue[name] ?? 0,
                      retrying: retryingByQueue[name] ?? 0, dead: deadByQueue[name] ?? 0, workers: workersByQueue[name] ?? 0)
            },
            workers: workers.values.sorted { $0.name < $1.name }.map { w in
                .init(name: w.name, queue: w.queue, threads: w.concurrency, credit: w.credit, leased: w.leased,
                      completed: w.completed, draining: w.draining, silentMilliseconds: now - w.lastSeen,
                      handlerRestarts: w.handler.restarts, handlerDeathsInARow: w.handler.deathsInARow,
                      handlerProblem: w.handler.problem.isEmpty ? nil : w.handler.problem)
            },
            departed: departed.map { d in
                let (how, reason, code): (String, String, UInt8?) = switch d.departure {
                case .bye(let c, let r): ("bye", r, c.rawValue)
                case .silent: ("silent", "", nil)
                case .unreachable: ("unreachable", "", nil)
                }
                return .init(name: d.name, queue: d.queue, how: how, reason: reason, byeCode: code, completed: d.completed,
                             itemsReturned: d.itemsReturned, ago: now - d.at)
            },
            counters: counters,
            itemsHeld: itemsHeld
        )
    }
}
