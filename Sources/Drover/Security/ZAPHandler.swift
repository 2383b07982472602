import DroverPool
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// One handshake, as libzmq asks the ZAP handler about it (RFC 27).
public struct ZAPRequest: Sendable, Equatable {
    public var domain: String
    /// The peer's IP address ("127.0.0.1", "::1"), empty for ipc and inproc.
    public var address: String
    /// "NULL" or "CURVE" (Drover serves no other).
    public var mechanism: String
    /// A CURVE client's long-term public key, in Z85.
    public var clientKey: String?

    public init(domain: String, address: String, mechanism: String, clientKey: String?) {
        self.domain = domain
        self.address = address
        self.mechanism = mechanism
        self.clientKey = clientKey
    }
}

/// The ZAP handler's answer: admit the peer (with the user id and properties every later
/// message from it carries) or refuse it.
public struct ZAPVerdict: Sendable, Equatable {
    public var admitted: Bool
    /// Why a peer was refused (sent back as the ZAP status text, and logged).
    public var reason: String
    /// Read from each message with `zmq_msg_gets(msg, "User-Id")`: the client's Z85 key.
    public var userID: String
    /// Read from each message with `zmq_msg_gets(msg, NAME)`.
    public var properties: [(name: String, value: String)]

    public static func admit(userID: String = "", properties: [(name: String, value: String)] = []) -> ZAPVerdict {
        ZAPVerdict(admitted: true, reason: "OK", userID: userID, properties: properties)
    }

    public static func refuse(_ reason: String) -> ZAPVerdict {
        ZAPVerdict(admitted: false, reason: reason, userID: "", properties: [])
    }

    public static func == (a: ZAPVerdict, b: ZAPVerdict) -> Bool {
        a.admitted == b.admitted && a.reason == b.reason && a.userID == b.userID
            && a.properties.map(\.name) == b.properties.map(\.name) && a.properties.map(\.value) == b.properties.map(\.value)
    }
}

/// Answers libzmq's authentication requests for every socket of one context that sets a ZAP
/// domain: a thread with a REP socket bound at `inproc://zeromq.zap.01`.
///
/// Bound before the sockets it guards accept anyone, and with `ZMQ_ZAP_ENFORCE_DOMAIN` on
/// those sockets, so that a missing handler refuses rather than admits (libzmq's default is to
/// admit everyone when no handler is bound).
public final class ZAPHandler: Sendable {
    public static let endpoint = "inproc://zeromq.zap.01"
    private let stopping = StopFlag()
    private let thread: Mutex<JoinableThread?> = Mutex(nil)

    /// Shared with the handler's thread.
    private final class StopFlag: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Starts the handler on `context`; returns once it is bound. `decide` runs on the
    /// handler's thread, one handshake at a time.
    public init(context: ZMQContext, decide: @escaping @Sendable (ZAPRequest) -> ZAPVerdict) throws {
        let bound = DispatchSemaphore(value: 0)
        let failure = Mutex<Error?>(nil)
        let stopping = self.stopping
        let worker = JoinableThread(name: "drover-zap") {
            let socket: ZMQSocket
            do {
                socket = try ZMQSocket(context, type: .rep, linger: 0)
                try socket.bind(Self.endpoint)
            } catch {
                failure.withLock { $0 = error }
                bound.signal()
                return
            }
            bound.signal()
            Self.serve(socket, stopping: stopping, decide: decide)
            // Closed on this thread: closing it from another aborts libzmq.
            socket.close()
        }
        bound.wait()
        if let error = failure.withLock({ $0 }) {
            worker.join()
            throw error
        }
        thread.withLock { $0 = worker }
    }

    /// Stops the handler and waits for its thread. Safe to call more than once.
    public func stop() {
        stopping.value.store(true, ordering: .releasing)
        let worker = thread.withLock { held -> JoinableThread? in
            defer { held = nil }
            return held
        }
        worker?.join()
    }

    private static func serve(_ socket: ZMQSocket, stopping: StopFlag, decide: (ZAPRequest) -> ZAPVerdict) {
        var poller = ZMQPoller()
        let index = poller.add(socket)
        while !stopping.value.load(ordering: .acquiring) {
            guard let ready = try? poller.poll(timeout: 200) else { return }  // the context ended
            guard ready[index] else { continue }
            guard let frames = try? socket.receive(dontWait: true) else { continue }
            let reply = answer(frames, decide: decide)
            guard (try? socket.send(reply)) != nil else { return }
        }
    }

    /// The reply frames to one request's frames (any frames: a malformed request gets a 500).
    public static func answer(_ frames: [Frame], decide: (ZAPRequest) -> ZAPVerdict) -> [Frame] {
        // version, request id, domain, address, routing id, mechanism, credentials…
        guard frames.count >= 6, frames[0] == Array("1.0".utf8) else {
            let id = frames.count > 1 ? frames[1] : []
            return [Array("1.0".utf8), id, Array("500".utf8), Array("malformed ZAP request".utf8), [], []]
        }
        let mechanism = String(decoding: frames[5], as: UTF8.self)
        let key = mechanism == "CURVE" && frames.count > 6 ? z85EncodeKey(frames[6]) : nil
        let request = ZAPRequest(domain: String(decoding: frames[2], as: UTF8.self), address: String(decoding: frames[3], as: UTF8.self),
                                 mechanism: mechanism, clientKey: key)
        let verdict = decide(request)
        return [Array("1.0".utf8), frames[1], Array((verdict.admitted ? "200" : "400").utf8), Array(verdict.reason.utf8),
                Array(verdict.userID.utf8), verdict.admitted ? metadata(verdict.properties) : []]
    }

    /// ZMTP property encoding: a 1-byte name length, the name, a 4-byte value length, the value.
    static func metadata(_ properties: [(name: String, value: String)]) -> [UInt8] {
        var bytes: [UInt8] = []
        for (name, value) in properties {
            let n = Array(name.utf8.prefix(255)), v = Array(value.utf8)
            bytes.append(UInt8(n.count))
            bytes += n
            let length = UInt32(v.count)
            bytes += [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            bytes += v
        }
        return bytes
    }
}
