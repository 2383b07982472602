/// Reads a message's argument frames in order, checking each frame's size before use.
struct ArgumentReader<C: RandomAccessCollection> where C.Element == [UInt8], C.Index == Int {
    private let args: C
    private var index: Int
    private let command: DroverMessage.Command

    init(args: C, command: DroverMessage.Command) {
        self.args = args
        self.index = args.startIndex
        self.command = command
    }

    var atEnd: Bool { index >= args.endIndex }

    func expectCount(_ n: Int) throws(ProtocolError) {
        guard args.count == n else {
            throw .frameCount("\(command): expected \(n) argument frame(s), got \(args.count)")
        }
    }

    mutating func raw() -> [UInt8] {
        defer { index += 1 }
        return args[index]
    }

    private mutating func sized(_ n: Int, _ what: String) throws(ProtocolError) -> [UInt8] {
        guard !atEnd else { throw .frameCount("\(command): missing \(what)") }
        let frame = raw()
        guard frame.count == n else { throw .frameSize("\(command): \(what) must be \(n) bytes, got \(frame.count)") }
        return frame
    }

    mutating func byte() throws(ProtocolError) -> UInt8 { try sized(1, "a 1-byte field")[0] }
    mutating func u16() throws(ProtocolError) -> UInt16 { let b = try sized(2, "a 2-byte integer"); return UInt16(b[0]) << 8 | UInt16(b[1]) }
    mutating func u32() throws(ProtocolError) -> UInt32 { readU32(try sized(4, "a 4-byte integer"), 0) }
    mutating func u64() throws(ProtocolError) -> UInt64 { readU64(try sized(8, "an 8-byte integer"), 0) }
    mutating func id() throws(ProtocolError) -> ItemID { readID(try sized(16, "an item id"), 0) }

    mutating func ref() throws(ProtocolError) -> DeliveryRef {
        let b = try sized(Codec.refBytes, "an item header (id + attempt)")
        return DeliveryRef(id: readID(b, 0), attempt: readU32(b, 16))
    }

    mutating func text() throws(ProtocolError) -> String {
        guard !atEnd else { throw .frameCount("\(command): missing a text frame") }
        let frame = raw()
        guard let s = String(validating: frame, as: UTF8.self) else { throw .badValue("\(command): text is not valid UTF-8") }
        return s
    }

    mutating func name() throws(ProtocolError) -> String {
        let s = try text()
        guard s.utf8.count <= Codec.maxNameBytes else { throw .badValue("\(command): a name is longer than \(Codec.maxNameBytes) bytes") }
        return s
    }

    mutating func fleet() throws(ProtocolError) -> FleetState {
        let b = try sized(13, "a fleet state")
        guard let phase = FleetState.Phase(rawValue: b[8]) else { throw .badValue("\(command): unknown fleet phase \(b[8])") }
        return FleetState(epoch: readU64(b, 0), phase: phase, deadlineMilliseconds: readU32(b, 9))
    }

    mutating func idList() throws(ProtocolError) -> [ItemID] {
        guard !atEnd else { throw .frameCount("\(command): missing the id list") }
        let b = raw()
        guard b.count % 16 == 0 else { throw .frameSize("\(command): an id list is a multiple of 16 bytes, got \(b.count)") }
        return stride(from: 0, to: b.count, by: 16).map { readID(b, $0) }
    }

    mutating func refList() throws(ProtocolError) -> [DeliveryRef] {
        guard !atEnd else { throw .frameCount("\(command): missing the item list") }
        let b = raw()
        guard b.count % Codec.refBytes == 0 else { throw .frameSize("\(command): an item list is a multiple of 20 bytes, got \(b.count)") }
        return stride(from: 0, to: b.count, by: Codec.refBytes).map { DeliveryRef(id: readID(b, $0), attempt: readU32(b, $0 + 16)) }
    }

    mutating func outcomes() throws(ProtocolError) -> [ItemOutcome] {
        guard (args.endIndex - index) % 2 == 0 else {
            throw .frameCount("\(command): expected header/payload pairs")
        }
        var out: [ItemOutcome] = []
        out.reserveCapacity((args.endIndex - index) / 2)
        while !atEnd {
            let h = try sized(Codec.outcomeHeaderBytes, "an outcome header (id + attempt + status)")
            guard let status = ItemOutcome.Status(rawValue: h[20]) else { throw .badValue("\(command): unknown status \(h[20])") }
            out.append(ItemOutcome(id: readID(h, 0), attempt: readU32(h, 16), status: status, payload: raw()))
        }
        return out
    }
}

@inline(__always) func readU32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

@inline(__always) func readU64(_ b: [UInt8], _ at: Int) -> UInt64 {
    UInt64(readU32(b, at)) << 32 | UInt64(readU32(b, at + 4))
}

@inline(__always) func readID(_ b: [UInt8], _ at: Int) -> ItemID {
    ItemID(high: readU64(b, at), low: readU64(b, at + 8))
}
