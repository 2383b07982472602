#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex with one condition variable (pthread), for threads that wait for state to change.
@usableFromInline
final class Condition: @unchecked Sendable {
    @usableFromInline let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    @usableFromInline let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    @usableFromInline
    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    @inlinable
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a signal; call with the lock held (inside `withLock`).
    @inlinable
    func wait() { pthread_cond_wait(cond, mutex) }

    @inlinable
    func signal() { pthread_cond_signal(cond) }
    @inlinable
    func broadcast() { pthread_cond_broadcast(cond) }
}
