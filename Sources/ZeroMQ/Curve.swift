import CZeroMQ

/// A CURVE key pair in Z85 text (40 characters each).
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    /// Generates a new key pair. The corresponding C function is `zmq_curve_keypair`.
    public static func generate() throws(ZMQError) -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        _ = try zmqCall("zmq_curve_keypair") { zmq_curve_keypair(&pub, &sec) }
        return CurveKeyPair(
            publicKey: String(decoding: pub.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self),
            secretKey: String(decoding: sec.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        )
    }
}

/// Decodes a 40-character Z85 key into its 32 bytes, or `nil` when the text is not a Z85 key.
/// The corresponding C function is `zmq_z85_decode`.
public func z85DecodeKey(_ text: String) -> [UInt8]? {
    guard text.utf8.count == 40 else { return nil }
    var out = [UInt8](repeating: 0, count: 32)
    let ok = out.withUnsafeMutableBufferPointer { zmq_z85_decode($0.baseAddress, text) != nil }
    return ok ? out : nil
}

/// Encodes a 32-byte key as 40 characters of Z85. The corresponding C function is
/// `zmq_z85_encode`.
public func z85EncodeKey(_ key: [UInt8]) -> String? {
    guard key.count == 32 else { return nil }
    var text = [CChar](repeating: 0, count: 41)
    let ok = key.withUnsafeBufferPointer { zmq_z85_encode(&text, $0.baseAddress, 32) != nil }
    return ok ? String(decoding: text.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
}
