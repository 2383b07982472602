#if canImport(Glibc)
import Glibc
#endif

/// `HOST:PID`: the name a worker, producer or controller gives itself in `hello` unless told
/// another (workers take `--name`).
public func defaultPeerName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count)
    let host = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return "\(host):\(getpid())"
}

/// The former name of ``defaultPeerName()``.
@available(*, deprecated, renamed: "defaultPeerName")
public func defaultWorkerName() -> String { defaultPeerName() }
