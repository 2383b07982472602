import CDroverShims

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A dedicated OS thread that can be joined. Blocking work (ZeroMQ loops, handlers) runs on
/// these, never on Swift's cooperative pool, which has only as many threads as cores.
public final class JoinableThread: @unchecked Sendable {
    // Written once by `init` before any other thread can see `self`; read by `join`.
    private var thread: pthread_t? = nil
    private var joined = false
    /// The name given at creation, for logs.
    public let name: String

    /// Starts a thread named `name` (Linux keeps 15 bytes) that runs `body`.
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.name = name
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            drover_set_thread_name(box.name)
            box.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed with \(rc)")
        thread = tid
    }

    /// Waits for the thread to finish. Call once, from another thread.
    public func join() {
        guard !joined, let thread else { return }
        joined = true
        pthread_join(thread, nil)
    }

    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}
