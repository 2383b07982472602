import Drover
import DroverJournal
import DroverProtocol

/// The decoders that read bytes from outside the process, as fuzz targets: each takes any
/// bytes and must return (a decoder may throw its error) without crashing, hanging or reading
/// out of bounds. `drover-fuzz` runs them under libFuzzer; the test suite replays the committed
/// corpus (`Tests/Fuzz/corpus/TARGET/`) through them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A message as the broker, a worker or a producer receives it: every command's argument
    /// frames, packed records included.
    case message
    /// A certificate file (`--key`, `--broker-key`, `--authorized-keys`).
    case certificate
    /// A journal record's body, past the checksum.
    case journalRecord = "journal-record"
    /// A whole journal segment: headers, checksums, torn tails.
    case journalSegment = "journal-segment"
    /// A ZAP request, as libzmq hands it to the handler.
    case zap

    /// Runs the target on one input.
    public func run(_ data: [UInt8]) {
        switch self {
        case .message:
            _ = try? Codec.decode(Self.messageFrames(data))
        case .certificate:
            _ = try? Certificate.parse(String(decoding: data, as: UTF8.self), origin: "fuzz")
        case .journalRecord:
            _ = try? JournalRecord.decodeBody(data[...])
        case .journalSegment:
            _ = JournalReader.scan(data, segment: 1, isLast: data.first.map { $0 & 1 == 0 } ?? true, maxRecordBytes: 1 << 20)
        case .zap:
            _ = ZAPHandler.answer(Self.frames(data[...])) { request in
                request.clientKey == nil ? .refuse("no key") : .admit(userID: request.clientKey!, properties: [("Role", "worker")])
            }
        }
    }

    /// A message's frames from fuzz bytes: the first byte is the command (top bit set: no
    /// signature and command frames are added, so those are fuzzed too), the rest frames.
    static func messageFrames(_ data: [UInt8]) -> [[UInt8]] {
        guard let first = data.first else { return [] }
        let rest = frames(data.dropFirst())
        return first & 0x80 != 0 ? rest : [ProtocolVersion.signature, [first]] + rest
    }

    /// Frames from fuzz bytes: each a 2-byte big-endian length and that many bytes (the last
    /// one cut short if the bytes end).
    public static func frames(_ data: ArraySlice<UInt8>) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var at = data.startIndex
        while at + 1 < data.endIndex {
            let length = Int(data[at]) << 8 | Int(data[at + 1])
            at += 2
            let end = min(at + length, data.endIndex)
            frames.append(Array(data[at..<end]))
            at = end
        }
        return frames
    }

    /// Fuzz bytes for `frames` (the inverse of ``frames(_:)``), to make corpus seeds.
    public static func encode(frames: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        for frame in frames {
            bytes += [UInt8(frame.count >> 8 & 0xFF), UInt8(frame.count & 0xFF)] + frame
        }
        return bytes
    }

    /// Fuzz bytes for a whole message (its command byte, then its argument frames).
    public static func encode(message: DroverMessage) -> [UInt8] {
        let frames = Codec.encode(message)
        return [message.command.rawValue] + encode(frames: Array(frames.dropFirst(2)))
    }
}

/// Seeds for the corpus: one valid input of every kind each target reads, from which the
/// fuzzer mutates (`drover-fuzz --seed DIR` writes them).
public enum FuzzSeeds {
    public static func messages() -> [DroverMessage] {
        let id = ItemID(high: 0x0123_4567_89AB_CDEF, low: 42)
        let fleet = FleetState(epoch: 1_795_000_000_000, phase: .exiting, deadlineMilliseconds: 30_000)
        let outcome = ItemOutcome(id: id, attempt: 2, status: .succeeded, payload: Array("result".utf8))
        return [
            .hello(Hello(role: .worker, name: "host:1", queue: "images", concurrency: 8)),
            .hello(Hello(role: .worker, name: "w", queue: "q", concurrency: 2, held: [DeliveryRef(id: id, attempt: 3)])),
            .hello(Hello(role: .producer, name: "p")),
            .welcome(Welcome(maxItemBytes: 1 << 20, heartbeatMilliseconds: 1000, fleet: fleet, instance: 7, livenessMilliseconds: 3000)),
            .heartbeat,
            .error(.unknownPeer, "say hello"),
            .submit(Submit(queue: "q", wantsResults: true, itemTimeoutMilliseconds: 500,
                           items: [SubmittedItem(id: id, payload: Array("one".utf8)), SubmittedItem(id: ItemID(high: 1, low: 2), payload: [])])),
            .accepted([id, ItemID(high: 3, low: 4)]),
            .rejected(Rejection(ids: [id], code: .queueFull, reason: "full")),
            .result([outcome, ItemOutcome(id: id, attempt: 1, status: .failed, payload: Array("boom".utf8))]),
            .credit(16),
            .deliver([Delivery(id: id, attempt: 1, timeoutMilliseconds: 100, payload: Array("payload".utf8))]),
            .done(credit: 3, [outcome]),
            .handBack([DeliveryRef(id: id, attempt: 1)]),
            .bye(.drained, "drained"),
            .handlerState(HandlerHealth(restarts: 2, deathsInARow: 1, problem: "exited 1")),
            .fleet(fleet),
            .statusRequest,
            .statusReply("{}"),
            .exitRequest(deadlineMilliseconds: 30_000),
            .exitProgress("{\"event\":\"waiting\"}"),
            .exitFinished(succeeded: true, "{}"),
            .deadLetters(.list(limit: 10)),
            .deadLetters(.show(id)),
            .deadLetters(.replay([id])),
            .deadLetters(.purge([])),
            .deadLetterReply("[]"),
        ]
    }

    public static func certificate() -> [UInt8] {
        Array("""
        #   ZeroMQ CURVE **Secret** Certificate
        metadata
            role = "worker"
            name = "web-1"
        curve
            public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
            secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"

        """.utf8)
    }

    public static func zapRequests() -> [[UInt8]] {
        [FuzzTarget.encode(frames: [Array("1.0".utf8), Array("1".utf8), Array("drover".utf8), Array("127.0.0.1".utf8), [], Array("NULL".utf8)]),
         FuzzTarget.encode(frames: [Array("1.0".utf8), Array("2".utf8), Array("drover".utf8), Array("10.0.0.2".utf8), [], Array("CURVE".utf8),
                                    Array(repeating: 7, count: 32)])]
    }
}
