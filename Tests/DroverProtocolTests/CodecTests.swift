import Testing
@testable import DroverProtocol

@Suite("Wire protocol v1 codec")
struct CodecTests {
    static let id1 = ItemID(high: 0x0102_0304_0506_0708, low: 42)
    static let id2 = ItemID(high: 9, low: .max)
    static let fleet = FleetState(epoch: 1_795_000_000_000, phase: .exiting, deadlineMilliseconds: 30_000)

    static let samples: [DroverMessage] = [
        .hello(Hello(role: .worker, name: "host:12", queue: "images", concurrency: 8)),
        .hello(Hello(role: .worker, name: "host:12", queue: "images", concurrency: 8, held: [])),
        .hello(Hello(role: .worker, name: "w", queue: "q", concurrency: 2,
                     held: [DeliveryRef(id: ItemID(high: 1, low: 2), attempt: 3), DeliveryRef(id: ItemID(high: 4, low: 5), attempt: 1)])),
        .hello(Hello(role: .producer, name: "p")),
        .welcome(Welcome(maxItemBytes: 1 << 20, heartbeatMilliseconds: 1000, fleet: fleet, instance: 0xDEAD_BEEF, livenessMilliseconds: 4500)),
        .heartbeat,
        .error(.unknownPeer, "say hello"),
        .submit(Submit(queue: "q", wantsResults: true, items: [SubmittedItem(id: id1, payload: Array("a".utf8)), SubmittedItem(id: id2, payload: [])])),
        .submit(Submit(queue: "q", wantsResults: false, items: [])),
        .submit(Submit(queue: "q", wantsResults: true, itemTimeoutMilliseconds: 30_000, items: [SubmittedItem(id: id1, payload: [1])])),
        .accepted([id1, id2]),
        .rejected(Rejection(ids: [id1], code: .queueFull, reason: "full")),
        .result([ItemOutcome(id: id1, attempt: 2, status: .failed, payload: Array("boom".utf8))]),
        .credit(17),
        .deliver([Delivery(id: id1, attempt: 1, payload: [0, 255]), Delivery(id: id2, attempt: 3, timeoutMilliseconds: 500, payload: [])]),
        .done(credit: 2, [ItemOutcome(id: id2, attempt: 1, status: .succeeded, payload: [1, 2, 3])]),
        .handBack([DeliveryRef(id: id1, attempt: 4)]),
        .handBack([]),
        .bye(.drained, "fleet exit"),
        .bye(.deadlinePassed, ""),
        .bye(.acknowledged, "ok"),
        .handlerState(HandlerHealth(restarts: 7, deathsInARow: 3, problem: "the handler process exited with status 3")),
        .handlerState(HandlerHealth()),
        .fleet(fleet),
        .statusRequest,
        .statusReply("{}"),
        .exitRequest(deadlineMilliseconds: 5000),
        .exitProgress("{\"event\":\"waiting\"}"),
        .exitFinished(succeeded: true, "{}"),
        .deadLetters(.list(limit: 10)),
        .deadLetters(.show(id1)),
        .deadLetters(.replay([id1, id2])),
        .deadLetters(.purge([])),
        .deadLetterReply("[]"),
    ]

    @Test("every message survives encode then decode", arguments: samples)
    func roundTrip(_ message: DroverMessage) throws {
        let frames = Codec.encode(message)
        #expect(frames[0] == ProtocolVersion.signature)
        #expect(frames[1] == [message.command.rawValue])
        #expect(try Codec.decode(frames) == message)
    }

    @Test("integers are big-endian, an item id is 16 bytes, and items are packed into one frame")
    func layout() {
        let frames = Codec.encode(.deliver([Delivery(id: Self.id1, attempt: 0x0A0B_0C0D, timeoutMilliseconds: 0x0102_0304, payload: [9]),
                                            Delivery(id: Self.id2, attempt: 1, payload: [])]))
        #expect(frames.count == 3)
        #expect(frames[2] == [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 42, 0x0A, 0x0B, 0x0C, 0x0D, 1, 2, 3, 4, 0, 0, 0, 1, 9]
            + [0, 0, 0, 0, 0, 0, 0, 9] + [UInt8](repeating: 0xFF, count: 8) + [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        let submit = Codec.encode(.submit(Submit(queue: "q", wantsResults: true, itemTimeoutMilliseconds: 1500, items: [])))
        #expect(Array(submit[2...4]) == [Array("q".utf8), [1], [0, 0, 0x05, 0xDC]], "queue, flags, then the item time limit")
        let outcome = Codec.encode(.done(credit: 1, [ItemOutcome(id: Self.id1, attempt: 2, status: .failed, payload: [7, 8])]))
        #expect(outcome[3] == [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 2, 1, 0, 0, 0, 2, 7, 8])
        #expect(Codec.encode(.credit(258))[2] == [0, 0, 1, 2])
    }

    @Test("items packed into several frames decode as one list")
    func severalPackedFrames() throws {
        var frames = Codec.encode(.submit(Submit(queue: "q", wantsResults: false, items: [SubmittedItem(id: Self.id1, payload: [1])])))
        frames += Codec.encode(.submit(Submit(queue: "q", wantsResults: false, items: [SubmittedItem(id: Self.id2, payload: [2, 3])])))[5...]
        let decoded = try Codec.decode(frames)
        #expect(decoded == .submit(Submit(queue: "q", wantsResults: false,
                                          items: [SubmittedItem(id: Self.id1, payload: [1]), SubmittedItem(id: Self.id2, payload: [2, 3])])))
    }

    @Test("a newer protocol version is refused with a message naming both versions")
    func unsupportedVersion() {
        var frames = Codec.encode(.heartbeat)
        frames[0] = Array("DRV".utf8) + [3]
        #expect(throws: ProtocolError.anyUnsupportedVersion) { try Codec.decode(frames) }
        do {
            _ = try Codec.decode(frames)
        } catch {
            #expect(error.detail.contains("version 3"))
            #expect(error.detail.contains("version 2"))
            #expect(error.wireCode == .unsupportedVersion)
        }
    }

    @Test("frames that are not Drover, or break the layout, are refused", arguments: [
        ([Array("hello".utf8)], ProtocolError.anyFrameCount),
        ([Array("GET /".utf8), [1]], ProtocolError.anyNotDrover),
        ([ProtocolVersion.signature, [0x99]], ProtocolError.anyUnknownCommand),
        ([ProtocolVersion.signature, [0x03, 0x03]], ProtocolError.anyFrameSize),
        ([ProtocolVersion.signature, [0x20]], ProtocolError.anyFrameCount),
        ([ProtocolVersion.signature, [0x20], [1, 2]], ProtocolError.anyFrameSize),
        ([ProtocolVersion.signature, [0x11], [1, 2, 3]], ProtocolError.anyFrameSize),
        ([ProtocolVersion.signature, [0x10], Array("q".utf8)], ProtocolError.anyFrameCount),
        ([ProtocolVersion.signature, [0x10], Array("q".utf8), [1]], ProtocolError.anyFrameCount),
        ([ProtocolVersion.signature, [0x10], Array("q".utf8), [1], [0, 0, 0, 0], [1]], ProtocolError.anyFrameSize),
        ([ProtocolVersion.signature, [0x10], Array("q".utf8), [1], [0, 0]], ProtocolError.anyFrameSize),
        // A record whose length runs past the end of its frame.
        ([ProtocolVersion.signature, [0x10], Array("q".utf8), [1], [0, 0, 0, 0], [UInt8](repeating: 0, count: 16) + [0, 0, 0, 9, 1]], ProtocolError.anyFrameSize),
        ([ProtocolVersion.signature, [0x22], [0, 0, 0, 1], [UInt8](repeating: 0, count: 20) + [7, 0, 0, 0, 0]], ProtocolError.anyBadValue),
        ([ProtocolVersion.signature, [0x24], [1], [0xFF, 0xFE]], ProtocolError.anyBadValue),
        // A bye without its code (the version-1 draft had only the reason), and an unknown code.
        ([ProtocolVersion.signature, [0x24], Array("done".utf8)], ProtocolError.anyFrameCount),
        ([ProtocolVersion.signature, [0x24], [9], []], ProtocolError.anyBadValue),
        // Undefined submit flag bits.
        ([ProtocolVersion.signature, [0x10], Array("q".utf8), [0x03], [0, 0, 0, 0]], ProtocolError.anyBadValue),
        ([ProtocolVersion.signature, [0x01], [9], [], [], [0, 0, 0, 0]], ProtocolError.anyBadValue),
        ([ProtocolVersion.signature, [0x30], [UInt8](repeating: 0, count: 8) + [7] + [0, 0, 0, 0]], ProtocolError.anyBadValue),
    ] as [([[UInt8]], ProtocolError)])
    func malformed(_ frames: [[UInt8]], _ expected: ProtocolError) {
        #expect(throws: expected) { try Codec.decode(frames) }
    }

    @Test("a name longer than 255 bytes is refused")
    func longName() {
        let frames = Codec.encode(.hello(Hello(role: .worker, name: String(repeating: "x", count: 256))))
        #expect(throws: ProtocolError.anyBadValue) { try Codec.decode(frames) }
    }

    @Test("decoding works on a slice, as the broker passes frames after the routing id")
    func decodesSlice() throws {
        let frames = [Array("peer".utf8)] + Codec.encode(.credit(5))
        #expect(try Codec.decode(frames[1...]) == .credit(5))
    }

    @Test("item ids print as 32 hex digits and parse back")
    func itemIDText() {
        #expect(Self.id1.description == "0102030405060708000000000000002a")
        #expect(ItemID(hex: Self.id1.description) == Self.id1)
        #expect(ItemID(hex: "xyz") == nil)
    }

    @Test("packed frames stay under the broker's frame limit however many large records a message carries")
    func packedFramesAreBounded() throws {
        // Ten results of 900 KB and a hundred small ones: one packed frame would be 9 MB, over
        // the default broker's limit of 1 MiB + 64 KiB, which drops the sender's connection.
        var outcomes: [ItemOutcome] = []
        for n in 0..<110 {
            let size = n % 11 == 0 ? 900_000 : 100
            outcomes.append(ItemOutcome(id: ItemID(high: 7, low: UInt64(n)), attempt: 1, status: .succeeded,
                                        payload: Array(repeating: UInt8(n & 0xFF), count: size)))
        }
        let frames = Codec.encode(.done(credit: 3, outcomes))
        let packed = frames.dropFirst(3)
        #expect(packed.count > 1)
        for frame in packed {
            #expect(frame.count <= max(Codec.packedFrameBytes, 900_000 + Codec.outcomeHeaderBytes + 4))
        }
        #expect(try Codec.decode(frames) == .done(credit: 3, outcomes))
        // A producer's fullest batch: 256 items, 256 KiB of payload.
        let batch = (0..<256).map { SubmittedItem(id: ItemID(high: 1, low: UInt64($0)), payload: Array(repeating: 1, count: 1024)) }
        #expect(Codec.encode(.submit(Submit(queue: "q", wantsResults: false, items: batch))).count == 6,
                "a producer's full batch is still one packed frame")
    }
}
