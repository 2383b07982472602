/// The first frame of every Drover message: `DRV` followed by the protocol version.
public enum ProtocolVersion {
    /// The version this build speaks.
    /// Version 2: `bye` carries a code, `welcome` the broker's liveness, `submit` an item time
    /// limit and each delivery its time limit.
    public static let current: UInt8 = 2
    /// The three bytes before the version byte.
    public static let magic: [UInt8] = Array("DRV".utf8)
    /// The whole first frame of a message of this version.
    public static let signature: [UInt8] = magic + [current]
}

/// An item's identity: 16 bytes chosen by the producer, unique per item.
///
/// The producer CLI uses 8 random bytes per run followed by an 8-byte sequence number.
public struct ItemID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// 32 lowercase hex digits.
    public var description: String {
        let h = String(high, radix: 16), l = String(low, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h + String(repeating: "0", count: 16 - l.count) + l
    }

    /// Parses 32 hex digits, as printed by ``description``.
    public init?(hex: String) {
        guard hex.utf8.count == 32,
              let high = UInt64(hex.prefix(16), radix: 16),
              let low = UInt64(hex.suffix(16), radix: 16) else { return nil }
        self.init(high: high, low: low)
    }

    public static func < (a: ItemID, b: ItemID) -> Bool { (a.high, a.low) < (b.high, b.low) }

    @inlinable
    public static func == (a: ItemID, b: ItemID) -> Bool { a.high == b.high && a.low == b.low }
}

/// Whether the fleet is running or shutting down. Carried with an epoch, so a newer state
/// always wins and a repeated one changes nothing.
public struct FleetState: Sendable, Equatable, CustomStringConvertible {
    public enum Phase: UInt8, Sendable {
        case running = 0
        case exiting = 1
    }

    /// Grows with every change; a controller starts at its start time in milliseconds.
    public var epoch: UInt64
    public var phase: Phase
    /// How long a worker may keep running its items after learning of `exiting`.
    public var deadlineMilliseconds: UInt32

    public init(epoch: UInt64, phase: Phase, deadlineMilliseconds: UInt32) {
        self.epoch = epoch
        self.phase = phase
        self.deadlineMilliseconds = deadlineMilliseconds
    }

    /// The state a broker starts in before any controller has spoken.
    public static let initial = FleetState(epoch: 0, phase: .running, deadlineMilliseconds: 0)

    public var description: String {
        "\(phase == .running ? "running" : "exiting") (epoch \(epoch))"
    }
}

/// The role a peer announces in ``Hello``.
public enum PeerRole: UInt8, Sendable, CustomStringConvertible {
    case producer = 1
    case worker = 2
    case controller = 3

    public var description: String {
        switch self {
        case .producer: "producer"
        case .worker: "worker"
        case .controller: "controller"
        }
    }
}

/// A peer's introduction to the broker.
public struct Hello: Sendable, Equatable {
    public var role: PeerRole
    /// A human-readable name, for logs and status (`host:pid` by default).
    public var name: String
    /// The queue a worker serves; empty for other roles.
    public var queue: String
    /// A worker's handler thread count; 0 for other roles.
    public var concurrency: UInt32
    /// A worker's held items: every delivery it is running, has waiting, or has an outcome
    /// or hand-back for that it has not sent yet. A broker that knows the worker (it
    /// registers again after losing contact) returns every other lease of it to the queue:
    /// messages in flight on a connection that dropped are gone both ways, so a lease the
    /// worker does not name was never received or its outcome was lost. `nil` (a worker that
    /// does not say) keeps every lease.
    public var held: [DeliveryRef]?

    public init(role: PeerRole, name: String, queue: String = "", concurrency: UInt32 = 0, held: [DeliveryRef]? = nil) {
        self.role = role
        self.name = name
        self.queue = queue
        self.concurrency = concurrency
        self.held = held
    }
}

/// The broker's answer to ``Hello``: its limits, the fleet state, and which broker process
/// this is.
public struct Welcome: Sendable, Equatable {
    public var maxItemBytes: UInt32
    public var heartbeatMilliseconds: UInt32
    public var fleet: FleetState
    /// Random per broker process. A new value after a reconnect means the broker restarted
    /// and has forgotten everything it held (its queue is in memory).
    public var instance: UInt64
    /// How long the broker tolerates silence from a peer before it drops it (a worker's leases
    /// then go back to the queue). A peer treats the broker as gone after the same silence.
    public var livenessMilliseconds: UInt32

    public init(maxItemBytes: UInt32, heartbeatMilliseconds: UInt32, fleet: FleetState, instance: UInt64,
                livenessMilliseconds: UInt32? = nil) {
        self.maxItemBytes = maxItemBytes
        self.heartbeatMilliseconds = heartbeatMilliseconds
        self.fleet = fleet
        self.instance = instance
        self.livenessMilliseconds = livenessMilliseconds ?? heartbeatMilliseconds * 3
    }
}

/// How a worker's handler processes fare (`handler-state`), for `drover status`: a handler
/// that keeps dying shows there, not only in the worker's log.
public struct HandlerHealth: Sendable, Equatable, Codable {
    /// Handler processes replaced since the worker started: they exited or crashed while they
    /// had items, or were stopped past their item's time limit.
    public var restarts: UInt32
    /// Of those, how many in a row without an item answered between: a handler that cannot
    /// start at all shows a growing number here.
    public var deathsInARow: UInt32
    /// Why the latest one ended; empty when none has.
    public var problem: String

    /// Deaths in a row from which a handler is said to keep dying (`drover status`, the
    /// broker's log).
    public static let keepsDyingAfter: UInt32 = 3
    /// Whether it has died ``keepsDyingAfter`` times in a row or more.
    public var keepsDying: Bool { deathsInARow >= Self.keepsDyingAfter }

    public init(restarts: UInt32 = 0, deathsInARow: UInt32 = 0, problem: String = "") {
        self.restarts = restarts
        self.deathsInARow = deathsInARow
        self.problem = problem
    }
}

/// Why a worker says goodbye (`bye`'s first argument), so that the controller can tell a worker
/// that met the exit deadline from one that did not without reading the reason's text.
public enum ByeCode: UInt8, Sendable, Equatable, Codable {
    /// The broker's answer to a worker's `bye`.
    case acknowledged = 0
    /// The worker finished every running item.
    case drained = 1
    /// The drain deadline passed: the worker handed its running items back.
    case deadlinePassed = 2
    /// The worker stopped at once (a second SIGTERM); the broker redelivers what it held.
    case stoppedAtOnce = 3
}

/// One item as a producer submits it.
///
/// The payload is a slice: decoded, it shares the received frame (no copy per item), and the
/// broker keeps it that way while the item is queued or running (see `ItemTable`).
public struct SubmittedItem: Sendable, Equatable {
    public var id: ItemID
    public var payload: ArraySlice<UInt8>

    @inlinable
    public init(id: ItemID, payload: ArraySlice<UInt8>) {
        self.id = id
        self.payload = payload
    }

    @inlinable
    public init(id: ItemID, payload: [UInt8]) {
        self.init(id: id, payload: payload[...])
    }
}

/// A batch of items for one queue.
public struct Submit: Sendable, Equatable {
    public var queue: String
    /// Whether the producer wants a ``ItemOutcome`` for each item.
    public var wantsResults: Bool
    /// How long each of these items may run once a worker starts it, in milliseconds; 0 for no
    /// limit (the worker's `--item-timeout`, if any, still applies; the smaller wins).
    public var itemTimeoutMilliseconds: UInt32
    public var items: [SubmittedItem]

    public init(queue: String, wantsResults: Bool, itemTimeoutMilliseconds: UInt32 = 0, items: [SubmittedItem]) {
        self.queue = queue
        self.wantsResults = wantsResults
        self.itemTimeoutMilliseconds = itemTimeoutMilliseconds
        self.items = items
    }

    /// Flag bit 0: send me each item's outcome.
    static let wantsResultsFlag: UInt8 = 1
    /// Every bit a `submit`'s flags byte may set; a message with any other is malformed.
    static let definedFlags: UInt8 = wantsResultsFlag
}

/// Items the broker did not accept, and why. Nothing of a rejected item was kept.
public struct Rejection: Sendable, Equatable {
    /// Why the items were refused; only ``queueFull`` and ``storageUnavailable`` are worth retrying unchanged.
    public enum Code: UInt8, Sendable {
        case tooLarge = 1
        case queueFull = 2
        case fleetExiting = 3
        case badQueueName = 4
        /// The broker cannot store items now (its disk is full, or its journal failed and it
        /// is stopping): worth retrying later, as for ``queueFull``.
        case storageUnavailable = 5

        /// Whether the same items may be offered again later.
        public var isWorthRetrying: Bool { self == .queueFull || self == .storageUnavailable }
    }

    public var ids: [ItemID]
    public var code: Code
    /// The broker's explanation, for the user.
    public var reason: String

    public init(ids: [ItemID], code: Code, reason: String) {
        self.ids = ids
        self.code = code
        self.reason = reason
    }
}

/// One delivery of an item to a worker. `attempt` starts at 1 and grows with each redelivery.
/// The payload is a slice, as in ``SubmittedItem``.
public struct Delivery: Sendable, Equatable {
    public var id: ItemID
    public var attempt: UInt32
    /// The producer's time limit for running the item, in milliseconds; 0 for none.
    public var timeoutMilliseconds: UInt32
    public var payload: ArraySlice<UInt8>

    @inlinable
    public init(id: ItemID, attempt: UInt32, timeoutMilliseconds: UInt32 = 0, payload: ArraySlice<UInt8>) {
        self.id = id
        self.attempt = attempt
        self.timeoutMilliseconds = timeoutMilliseconds
        self.payload = payload
    }

    @inlinable
    public init(id: ItemID, attempt: UInt32, timeoutMilliseconds: UInt32 = 0, payload: [UInt8]) {
        self.init(id: id, attempt: attempt, timeoutMilliseconds: timeoutMilliseconds, payload: payload[...])
    }
}

/// Names one delivery: an item and the attempt it was handed over on.
public struct DeliveryRef: Sendable, Hashable {
    public var id: ItemID
    public var attempt: UInt32

    @inlinable
    public init(id: ItemID, attempt: UInt32) {
        self.id = id
        self.attempt = attempt
    }
}

/// How one delivery ended: the handler's result, or its error text.
public struct ItemOutcome: Sendable, Equatable {
    public enum Status: UInt8, Sendable {
        case succeeded = 0
        case failed = 1
    }

    public var id: ItemID
    public var attempt: UInt32
    public var status: Status
    /// The result bytes when succeeded; the error text (UTF-8) when failed.
    public var payload: [UInt8]

    @inlinable
    public init(id: ItemID, attempt: UInt32, status: Status, payload: [UInt8]) {
        self.id = id
        self.attempt = attempt
        self.status = status
        self.payload = payload
    }
}

/// Error codes the broker and the controller send in ``DroverMessage/error(_:_:)``.
public enum ErrorCode: UInt16, Sendable {
    /// The message's first frame is not `DRV` + a version this peer speaks.
    case unsupportedVersion = 1
    /// The frames do not follow the protocol (count, sizes, unknown command).
    case malformed = 2
    /// The sender has not said ``Hello`` (for example after a broker restart): say it again.
    case unknownPeer = 3
    /// An item is larger than the broker's maximum.
    case itemTooLarge = 4
    /// The sender's role may not send that command.
    case notAllowed = 5
}
