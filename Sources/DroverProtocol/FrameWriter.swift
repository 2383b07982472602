/// Writes one frame whose size is known in advance: big-endian integers and bytes stored in
/// place, with no intermediate arrays and no per-field capacity checks. The codec's packed
/// frames (every item of a batch) are built this way.
struct FrameWriter {
    private let base: UnsafeMutableRawPointer
    private var offset = 0
    private let size: Int

    /// A frame of exactly `size` bytes, all of them written by `write`.
    static func frame(size: Int, _ write: (inout FrameWriter) -> Void) -> [UInt8] {
        guard size > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            var writer = FrameWriter(base: UnsafeMutableRawPointer(buffer.baseAddress!), size: size)
            write(&writer)
            precondition(writer.offset == size, "a frame was sized \(size) bytes but \(writer.offset) were written")
            count = size
        }
    }

    private init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    @inline(__always) private mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(offset + n <= size, "writing past the end of a frame")
        defer { offset += n }
        return base + offset
    }

    @inline(__always) mutating func u8(_ v: UInt8) { reserve(1).storeBytes(of: v, as: UInt8.self) }
    @inline(__always) mutating func u32(_ v: UInt32) { reserve(4).storeBytes(of: v.bigEndian, as: UInt32.self) }
    @inline(__always) mutating func u64(_ v: UInt64) { reserve(8).storeBytes(of: v.bigEndian, as: UInt64.self) }

    @inline(__always) mutating func id(_ id: ItemID) {
        u64(id.high)
        u64(id.low)
    }

    @inline(__always) mutating func bytes(_ bytes: ArraySlice<UInt8>) {
        let count = bytes.count
        guard count > 0 else { return }
        let target = reserve(count)
        bytes.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    /// A 4-byte length, then the bytes.
    @inline(__always) mutating func sized(_ bytes: ArraySlice<UInt8>) {
        u32(UInt32(bytes.count))
        self.bytes(bytes)
    }
}
