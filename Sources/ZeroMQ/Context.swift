import CZeroMQ
import Synchronization

/// A ZeroMQ context: one per process, shared by every thread that owns a socket.
///
/// The context is `Sendable`; sockets are not, so each socket lives on the thread that made it.
public final class ZMQContext: @unchecked Sendable {
    // Set once in init, never mutated; libzmq's context functions are thread-safe.
    let handle: UnsafeMutableRawPointer
    private let terminated = Mutex(false)

    /// Creates a context with `ioThreads` background I/O threads.
    /// The corresponding C function is `zmq_ctx_new`.
    public init(ioThreads: Int32 = 1) {
        do {
            handle = try zmqHandle("zmq_ctx_new") { zmq_ctx_new() }
        } catch {
            preconditionFailure("\(error): out of memory or file descriptors")
        }
        // Both values are valid for every context: a failure here is a Drover bug.
        _ = try? zmqCall("zmq_ctx_set(ZMQ_IO_THREADS)") { zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads) }
        // A socket blocked in receive or send must never outlive shutdown: sockets set their
        // own bounded linger too, this is the default for any that forget.
        _ = try? zmqCall("zmq_ctx_set(ZMQ_BLOCKY)") { zmq_ctx_set(handle, ZMQ_BLOCKY, 0) }
    }

    /// Makes every blocking call on this context's sockets return `ETERM`, so that each owning
    /// thread sees ``ZMQError/contextTerminated``, closes its socket and stops.
    /// The corresponding C function is `zmq_ctx_shutdown`.
    public func shutdown() {
        _ = try? zmqCall("zmq_ctx_shutdown") { zmq_ctx_shutdown(handle) }
    }

    /// Waits until every socket of this context is closed and their unsent messages have
    /// left or their linger has run out, then frees the context. Call it after closing the
    /// sockets, before the process exits, so that last messages (a final report, an
    /// acknowledgement) are not lost with the process. Later calls do nothing.
    /// The corresponding C function is `zmq_ctx_term`.
    public func terminate() {
        let first = terminated.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        // The gate retries EINTR; no other error is possible for a context terminated once.
        _ = try? zmqCall("zmq_ctx_term") { zmq_ctx_term(handle) }
    }

    deinit {
        // Waits for sockets to close; every socket has a bounded linger, so this ends.
        terminate()
    }
}

/// The libzmq version this process is linked against, for example `(4, 3, 4)`.
/// The corresponding C function is `zmq_version`.
public func zmqVersion() -> (major: Int32, minor: Int32, patch: Int32) {
    var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
    zmq_version(&major, &minor, &patch)
    return (major, minor, patch)
}
