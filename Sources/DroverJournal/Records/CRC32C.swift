import CDroverShims

/// CRC32C (Castagnoli), the checksum every journal record carries: the CPU's instruction
/// (SSE 4.2) where there is one, a table otherwise.
public enum CRC32C {
    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { drover_crc32c(0, $0.baseAddress, $0.count) }
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { checksum(bytes[...]) }

    /// Whether the CPU's instruction is used.
    public static var isHardware: Bool { drover_crc32c_is_hardware() != 0 }
}
