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

    /// The remaining frames as packed outcomes.
    mutating func outcomes() throws(ProtocolError) -> [ItemOutcome] {
        let command = command
        return try records(minimumRecord: Codec.outcomeHeaderBytes + 4) { (records) throws(ProtocolError) in
            let id = try records.id(), attempt = try records.u32(), raw = try records.byte()
            guard let status = ItemOutcome.Status(rawValue: raw) else { throw .badValue("\(command): unknown status \(raw)") }
            return ItemOutcome(id: id, attempt: attempt, status: status, payload: try records.sizedBytes())
        }
    }

    /// The remaining frames as packed records, each read by `read`, in order.
    mutating func records<T>(minimumRecord: Int, _ read: (inout RecordReader) throws(ProtocolError) -> T) throws(ProtocolError) -> [T] {
        var out: [T] = []
        while !atEnd {
            var records = RecordReader(raw(), command: command)
            out.reserveCapacity(out.count + records.count(minimumRecord: minimumRecord))
            while !records.atEnd { out.append(try read(&records)) }
        }
        return out
    }
}

/// Reads the records packed in one frame (items, deliveries, outcomes), checking that each
/// field fits before reading it: a truncated record is a `frameSize` error, never a crash.
struct RecordReader {
    private let frame: [UInt8]
    private var at = 0
    private let command: DroverMessage.Command

    init(_ frame: [UInt8], command: DroverMessage.Command) {
        self.frame = frame
        self.command = command
    }

    var atEnd: Bool { at >= frame.count }

    /// An upper bound on the records left, for reserving room.
    func count(minimumRecord: Int) -> Int { (frame.count - at) / minimumRecord }

    @inline(__always)
    private mutating func take(_ n: Int, _ what: StaticString) throws(ProtocolError) -> Int {
        guard frame.count - at >= n else { throw cutShort(n, what) }
        defer { at += n }
        return at
    }

    private func cutShort(_ n: Int, _ what: StaticString) -> ProtocolError {
        .frameSize("\(command): a packed record is cut short (\(what) needs \(n) bytes, \(frame.count - at) left)")
    }

    mutating func byte() throws(ProtocolError) -> UInt8 { frame[try take(1, "a status byte")] }

    mutating func u32() throws(ProtocolError) -> UInt32 { readU32(frame, try take(4, "a 4-byte integer")) }
    mutating func id() throws(ProtocolError) -> ItemID { readID(frame, try take(16, "an item id")) }

    /// A 4-byte length, then that many bytes: where they are in the frame.
    private mutating func payloadRange() throws(ProtocolError) -> Range<Int> {
        let count = Int(try u32())
        let start = try take(count, "a payload")
        return start..<(start + count)
    }

    /// A 4-byte length, then that many bytes, as a slice of the frame: no copy.
    mutating func sizedSlice() throws(ProtocolError) -> ArraySlice<UInt8> { frame[try payloadRange()] }

    /// A 4-byte length, then a copy of that many bytes.
    mutating func sizedBytes() throws(ProtocolError) -> [UInt8] {
        let range = try payloadRange()
        guard !range.isEmpty else { return [] }
        // Copying from a buffer pointer is the cheapest way to make a small array: about a
        // quarter of `init(unsafeUninitializedCapacity:)`, which looks up the array's generic
        // metadata on every call on Linux. (Not through a slice: that would retain the frame.)
        return frame.withUnsafeBufferPointer { Array(UnsafeBufferPointer(rebasing: $0[range])) }
    }
}

// Big-endian loads at `at`, which the caller has checked lies within `b`.
@inline(__always) func readU32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(bigEndian: b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) })
}

@inline(__always) func readU64(_ b: [UInt8], _ at: Int) -> UInt64 {
    UInt64(bigEndian: b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) })
}

@inline(__always) func readID(_ b: [UInt8], _ at: Int) -> ItemID {
    ItemID(high: readU64(b, at), low: readU64(b, at + 8))
}
