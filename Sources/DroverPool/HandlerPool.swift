import DequeModule

/// N handler threads that pull jobs from one bounded in-process queue and run `body` on each.
///
/// This is the in-process half of a Drover worker (the shape of the classic
/// "thread pool draining a `queue.Queue`" pattern), with the breakage removed:
/// - the queue is bounded and says "full" rather than growing: the worker grants the broker
///   exactly as much credit as the pool has room for;
/// - shutdown is not a sentinel behind earlier work: ``takeUnstarted()`` removes what has not
///   started (to hand it back), and ``close()`` lets running jobs finish while threads exit.
///
/// Lock order: the pool's single `Condition` is the only lock; `body` runs without it held.
public final class HandlerPool<Job: Sendable>: @unchecked Sendable {
    /// The pool's lifecycle.
    private enum State {
        /// Accepting jobs.
        case running
        /// No new jobs; threads finish the queue they have and exit.
        case closing
    }

    private let condition = Condition()
    // Guarded by `condition`.
    private var state = State.running
    private var queue: Deque<Job> = []
    private var busy = 0

    /// How many jobs may wait in the queue (not counting running ones).
    public let capacity: Int
    /// How many handler threads run jobs.
    public let threadCount: Int
    private var threads: [JoinableThread] = []

    /// Starts `threads` threads named `name-1`, `name-2`, … that run `body` on each job.
    public convenience init(threads: Int, capacity: Int, name: String, body: @escaping @Sendable (Job) -> Void) {
        self.init(threads: threads, capacity: capacity, name: name) { job, _ in body(job) }
    }

    /// As ``init(threads:capacity:name:body:)``, with the pool passed to `body` so that it can
    /// look at the queue (``queued``) when a job ends.
    public init(threads: Int, capacity: Int, name: String, body: @escaping @Sendable (Job, HandlerPool<Job>) -> Void) {
        precondition(threads > 0 && capacity > 0)
        self.capacity = capacity
        self.threadCount = threads
        self.threads = (1...threads).map { index in
            JoinableThread(name: "\(name)-\(index)") { [unowned self] in self.run(body) }
        }
    }

    /// Queues `job`; returns `false` (and keeps nothing) when the queue is full or closing.
    @discardableResult
    public func submit(_ job: Job) -> Bool {
        condition.withLock {
            guard case .running = state, queue.count < capacity else { return false }
            queue.append(job)
            condition.signal()
            return true
        }
    }

    /// Queues the longest prefix of `jobs` that fits, under one lock; returns how many were
    /// queued (0 when closing). The rest are not kept.
    public func submit<C: Collection>(contentsOf jobs: C) -> Int where C.Element == Job {
        condition.withLock {
            guard case .running = state else { return 0 }
            let count = min(jobs.count, capacity - queue.count)
            guard count > 0 else { return 0 }
            queue.append(contentsOf: jobs.prefix(count))
            for _ in 0..<min(count, threadCount) { condition.signal() }
            return count
        }
    }

    /// Removes and returns every job that no thread has started, oldest first.
    public func takeUnstarted() -> [Job] {
        condition.withLock {
            let jobs = Array(queue)
            queue.removeAll()
            return jobs
        }
    }

    /// Jobs queued plus jobs running.
    public var outstanding: Int { condition.withLock { queue.count + busy } }

    /// Jobs waiting for a thread.
    public var queued: Int { condition.withLock { queue.count } }

    /// Jobs a thread is running now.
    public var running: Int { condition.withLock { busy } }

    /// Stops accepting jobs. Threads run what is still queued, then exit.
    public func close() {
        condition.withLock {
            state = .closing
            condition.broadcast()
        }
    }

    /// Closes the pool and waits for every thread to exit.
    public func join() {
        close()
        for thread in threads { thread.join() }
    }

    private func run(_ body: @Sendable (Job, HandlerPool<Job>) -> Void) {
        while let job = next() {
            body(job, self)
            condition.withLock { busy -= 1 }
        }
    }

    private func next() -> Job? {
        condition.withLock {
            while true {
                if let job = queue.popFirst() {
                    busy += 1
                    return job
                }
                switch state {
                case .running: condition.wait()
                case .closing: return nil
                }
            }
        }
    }
}
