/// Turns ``DroverMessage`` values into frames and back. Pure Swift: no ZeroMQ here.
///
/// Integers are big-endian. Frame 0 is ``ProtocolVersion/signature``, frame 1 the command byte;
/// the command's arguments follow, one per frame, as `docs/PROTOCOL.md` lists.
public enum Codec {
    /// The longest queue or peer name accepted, in UTF-8 bytes.
    public static let maxNameBytes = 255
    /// Size of an item id.
    static let idSize = 16
    /// Size of an item reference: 16-byte id + 4-byte attempt.
    static let refBytes = 20
    /// Size of an outcome header: 16-byte id + 4-byte attempt + 1-byte status.
    static let outcomeHeaderBytes = 21
    /// Most bytes of records in one packed frame, unless one record alone is larger. Well under
    /// the broker's frame limit (the larger of its item limit and 1 MiB, plus 64 KiB), and large
    /// enough that a producer's full batch (256 KiB of payload plus headers) is one frame.
    public static let packedFrameBytes = 512 * 1024

    // MARK: Encoding

    /// The frames of `message`, starting with the signature frame.
    public static func encode(_ message: DroverMessage) -> [[UInt8]] {
        var frames: [[UInt8]] = [ProtocolVersion.signature, [message.command.rawValue]]
        switch message {
        case .hello(let h):
            frames += [[h.role.rawValue], Array(h.name.utf8), Array(h.queue.utf8), be32(h.concurrency)]
            if let held = h.held { frames.append(refList(held)) }
        case .welcome(let w):
            frames += [be32(w.maxItemBytes), be32(w.heartbeatMilliseconds), fleetFrame(w.fleet), be64(w.instance),
                       be32(w.livenessMilliseconds)]
        case .heartbeat, .statusRequest:
            break
        case .error(let code, let text):
            frames += [be16(code.rawValue), Array(text.utf8)]
        case .submit(let s):
            frames += [Array(s.queue.utf8), [s.wantsResults ? Submit.wantsResultsFlag : 0], be32(s.itemTimeoutMilliseconds)]
            appendPacked(s.items, header: idSize, payload: { $0.payload }, to: &frames) { frame, item in
                frame.id(item.id)
            }
        case .accepted(let ids):
            frames.append(idList(ids))
        case .rejected(let r):
            frames += [idList(r.ids), [r.code.rawValue], Array(r.reason.utf8)]
        case .result(let outcomes):
            appendOutcomes(outcomes, to: &frames)
        case .credit(let n):
            frames.append(be32(n))
        case .deliver(let deliveries):
            appendPacked(deliveries, header: refBytes + 4, payload: { $0.payload }, to: &frames) { frame, d in
                frame.id(d.id)
                frame.u32(d.attempt)
                frame.u32(d.timeoutMilliseconds)
            }
        case .done(let credit, let outcomes):
            frames.append(be32(credit))
            appendOutcomes(outcomes, to: &frames)
        case .handBack(let refs):
            frames.append(refList(refs))
        case .bye(let code, let reason):
            frames += [[code.rawValue], Array(reason.utf8)]
        case .handlerState(let health):
            frames += [be32(health.restarts), be32(health.deathsInARow), Array(health.problem.utf8)]
        case .fleet(let state):
            frames.append(fleetFrame(state))
        case .statusReply(let json), .exitProgress(let json):
            frames.append(Array(json.utf8))
        case .exitRequest(let deadline):
            frames.append(be32(deadline))
        case .exitFinished(let ok, let json):
            frames += [[ok ? 1 : 0], Array(json.utf8)]
        case .deadLetters(let request):
            switch request {
            case .list(let limit): frames += [[DeadLetterRequest.Kind.list.rawValue], be32(limit)]
            case .show(let id): frames += [[DeadLetterRequest.Kind.show.rawValue], idFrame(id)]
            case .replay(let ids): frames += [[DeadLetterRequest.Kind.replay.rawValue], idList(ids)]
            case .purge(let ids): frames += [[DeadLetterRequest.Kind.purge.rawValue], idList(ids)]
            }
        case .deadLetterReply(let json):
            frames.append(Array(json.utf8))
        }
        return frames
    }

    // MARK: Decoding

    /// Parses `frames` (starting at the signature frame), validating the count and size of
    /// every frame before reading it.
    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> DroverMessage {
        try decodeFrames(frames)
    }

    /// Parses the frames after a ROUTER's routing id, as ``decode(_:)-([[UInt8]])`` does.
    public static func decode(_ frames: ArraySlice<[UInt8]>) throws(ProtocolError) -> DroverMessage {
        try decodeFrames(frames)
    }

    // Generic inside this module only, so that both public entry points are specialized here.
    static func decodeFrames<C: RandomAccessCollection>(_ frames: C) throws(ProtocolError) -> DroverMessage
    where C.Element == [UInt8], C.Index == Int {
        guard frames.count >= 2 else {
            throw .frameCount("a Drover message has at least 2 frames (signature, command); got \(frames.count)")
        }
        let start = frames.startIndex
        let signature = frames[start]
        guard signature.count == 4, Array(signature.prefix(3)) == ProtocolVersion.magic else {
            throw .notDrover("the first frame is not a Drover signature (\"DRV\" + version byte)")
        }
        guard signature[3] == ProtocolVersion.current else { throw .unsupportedVersion(signature[3]) }
        let commandFrame = frames[start + 1]
        guard commandFrame.count == 1 else { throw .frameSize("the command frame must be 1 byte; got \(commandFrame.count)") }
        guard let command = DroverMessage.Command(rawValue: commandFrame[0]) else { throw .unknownCommand(commandFrame[0]) }
        let args = frames[(start + 2)...]
        var reader = ArgumentReader(args: args, command: command)

        switch command {
        case .hello:
            guard args.count == 4 || args.count == 5 else {
                throw .frameCount("hello: expected 4 argument frames (5 with a worker's held items), got \(args.count)")
            }
            guard let role = PeerRole(rawValue: try reader.byte()) else { throw .badValue("hello: unknown role") }
            var hello = Hello(role: role, name: try reader.name(), queue: try reader.name(), concurrency: try reader.u32())
            if !reader.atEnd { hello.held = try reader.refList() }
            return .hello(hello)
        case .welcome:
            try reader.expectCount(5)
            return .welcome(Welcome(maxItemBytes: try reader.u32(), heartbeatMilliseconds: try reader.u32(),
                                    fleet: try reader.fleet(), instance: try reader.u64(),
                                    livenessMilliseconds: try reader.u32()))
        case .heartbeat:
            try reader.expectCount(0)
            return .heartbeat
        case .statusRequest:
            try reader.expectCount(0)
            return .statusRequest
        case .error:
            try reader.expectCount(2)
            let raw = try reader.u16()
            return .error(ErrorCode(rawValue: raw) ?? .malformed, try reader.text())
        case .submit:
            guard args.count >= 3 else {
                throw .frameCount("submit: expected queue, flags, item time limit, then frames of packed items; got \(args.count) argument frames")
            }
            let queue = try reader.name()
            let flags = try reader.byte()
            guard flags & ~Submit.definedFlags == 0 else {
                throw .badValue("submit: undefined flag bits set (0x\(String(flags, radix: 16))); only bit 0 is defined")
            }
            let timeout = try reader.u32()
            let items = try reader.records(minimumRecord: idSize + 4) { (records) throws(ProtocolError) in
                SubmittedItem(id: try records.id(), payload: try records.sizedSlice())
            }
            return .submit(Submit(queue: queue, wantsResults: flags & Submit.wantsResultsFlag != 0, itemTimeoutMilliseconds: timeout, items: items))
        case .accepted:
            try reader.expectCount(1)
            return .accepted(try reader.idList())
        case .rejected:
            try reader.expectCount(3)
            let ids = try reader.idList()
            guard let code = Rejection.Code(rawValue: try reader.byte()) else { throw .badValue("rejected: unknown code") }
            return .rejected(Rejection(ids: ids, code: code, reason: try reader.text()))
        case .result:
            return .result(try reader.outcomes())
        case .credit:
            try reader.expectCount(1)
            return .credit(try reader.u32())
        case .deliver:
            return .deliver(try reader.records(minimumRecord: refBytes + 8) { (records) throws(ProtocolError) in
                Delivery(id: try records.id(), attempt: try records.u32(), timeoutMilliseconds: try records.u32(), payload: try records.sizedSlice())
            })
        case .done:
            guard args.count >= 1 else { throw .frameCount("done: missing the credit frame") }
            let credit = try reader.u32()
            return .done(credit: credit, try reader.outcomes())
        case .handBack:
            try reader.expectCount(1)
            return .handBack(try reader.refList())
        case .bye:
            try reader.expectCount(2)
            guard let code = ByeCode(rawValue: try reader.byte()) else { throw .badValue("bye: unknown code") }
            return .bye(code, try reader.text())
        case .handlerState:
            try reader.expectCount(3)
            return .handlerState(HandlerHealth(restarts: try reader.u32(), deathsInARow: try reader.u32(), problem: try reader.text()))
        case .fleet:
            try reader.expectCount(1)
            return .fleet(try reader.fleet())
        case .statusReply:
            try reader.expectCount(1)
            return .statusReply(try reader.text())
        case .exitProgress:
            try reader.expectCount(1)
            return .exitProgress(try reader.text())
        case .exitRequest:
            try reader.expectCount(1)
            return .exitRequest(deadlineMilliseconds: try reader.u32())
        case .exitFinished:
            try reader.expectCount(2)
            return .exitFinished(succeeded: try reader.byte() != 0, try reader.text())
        case .deadLetters:
            try reader.expectCount(2)
            switch DeadLetterRequest.Kind(rawValue: try reader.byte()) {
            case .list?: return .deadLetters(.list(limit: try reader.u32()))
            case .show?: return .deadLetters(.show(try reader.id()))
            case .replay?: return .deadLetters(.replay(try reader.idList()))
            case .purge?: return .deadLetters(.purge(try reader.idList()))
            case nil: throw .badValue("dead-letters: unknown request kind")
            }
        case .deadLetterReply:
            try reader.expectCount(1)
            return .deadLetterReply(try reader.text())
        }
    }

    // MARK: Helpers

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { FrameWriter.frame(size: 4) { $0.u32(v) } }
    static func be64(_ v: UInt64) -> [UInt8] { FrameWriter.frame(size: 8) { $0.u64(v) } }
    static func idFrame(_ id: ItemID) -> [UInt8] { FrameWriter.frame(size: idSize) { $0.id(id) } }

    static func idList(_ ids: [ItemID]) -> [UInt8] {
        FrameWriter.frame(size: ids.count * idSize) { frame in
            for id in ids { frame.id(id) }
        }
    }

    static func refList(_ refs: [DeliveryRef]) -> [UInt8] {
        FrameWriter.frame(size: refs.count * refBytes) { frame in
            for r in refs {
                frame.id(r.id)
                frame.u32(r.attempt)
            }
        }
    }

    static func fleetFrame(_ s: FleetState) -> [UInt8] {
        be64(s.epoch) + [s.phase.rawValue] + be32(s.deadlineMilliseconds)
    }

    /// Outcomes packed into one frame: per outcome its header, a 4-byte length, the payload.
    static func appendOutcomes(_ outcomes: [ItemOutcome], to frames: inout [[UInt8]]) {
        appendPacked(outcomes, header: outcomeHeaderBytes, payload: { $0.payload[...] }, to: &frames) { frame, o in
            frame.id(o.id)
            frame.u32(o.attempt)
            frame.u8(o.status.rawValue)
        }
    }

    /// Packs `records` into frames (none when empty): per record its `header`-byte header,
    /// written by `writeHeader`, then its payload as `sized`. A frame holds records up to
    /// ``packedFrameBytes``; a record larger than that gets a frame of its own. So no frame is
    /// larger than the largest record or that bound, whichever is more, and a message stays
    /// under the broker's frame limit (its largest item plus 64 KiB) however many items it
    /// carries, as long as each item is within the broker's item limit.
    static func appendPacked<T>(_ records: [T], header: Int, payload: (T) -> ArraySlice<UInt8>, to frames: inout [[UInt8]],
                                writeHeader: (inout FrameWriter, T) -> Void) {
        var start = records.startIndex
        var size = 0
        func emit(_ range: Range<Int>, size: Int) {
            frames.append(FrameWriter.frame(size: size) { frame in
                for record in records[range] {
                    writeHeader(&frame, record)
                    frame.sized(payload(record))
                }
            })
        }
        for index in records.indices {
            let recordSize = header + 4 + payload(records[index]).count
            if size > 0 && size + recordSize > packedFrameBytes {
                emit(start..<index, size: size)
                start = index
                size = 0
            }
            size += recordSize
        }
        if size > 0 { emit(start..<records.endIndex, size: size) }
    }
}
