import DequeModule
import Synchronization

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
/// A thread takes that lock once per job: ending one job and taking the next are one step.
///
/// The initialiser and the per-job path are `@inlinable`, so the module that makes a pool
/// compiles them for its own `Job`: unspecialised, every queue operation looked up the generic
/// type's metadata at run time, which cost a no-op handler thread a third of its time.
public final class HandlerPool<Job: Sendable>: @unchecked Sendable {
    @usableFromInline let condition = Condition()
    // Guarded by `condition`, which already keeps accesses apart: the run-time exclusivity
    // checks Swift adds to a class's stored properties cost a no-op job a fifth of its time.
    @exclusivity(unchecked) @usableFromInline var closing = false
    @exclusivity(unchecked) @usableFromInline var queue: Deque<Job> = []
    @exclusivity(unchecked) @usableFromInline var busy = 0
    /// `queue.count`, written under the lock, readable without it (``queued``).
    @usableFromInline let queuedCount = Atomic<Int>(0)

    /// How many jobs may wait in the queue (not counting running ones).
    public let capacity: Int
    /// How many handler threads run jobs.
    public let threadCount: Int
    @usableFromInline var threads: [JoinableThread] = []

    /// Starts `threads` threads named `name-1`, `name-2`, … that run `body` on each job.
    @inlinable
    public convenience init(threads: Int, capacity: Int, name: String, body: @escaping @Sendable (Job) -> Void) {
        self.init(threads: threads, capacity: capacity, name: name) { job, _ in body(job) }
    }

    /// As ``init(threads:capacity:name:body:)``, with the pool passed to `body` so that it can
    /// look at the queue (``queued``) when a job ends.
    @inlinable
    public init(threads: Int, capacity: Int, name: String, body: @escaping @Sendable (Job, HandlerPool<Job>) -> Void) {
        precondition(threads > 0 && capacity > 0)
        self.capacity = capacity
        self.threadCount = threads
        self.threads = (1...threads).map { index in
            JoinableThread(name: "\(name)-\(index)") { [unowned self] in self.run(body) }
        }
    }

    /// A pool whose threads take up to `batch` queued jobs at a time, for a handler that keeps
    /// several in flight (a long-lived process fed through a pipe). A thread takes its share of
    /// what is queued (the queue divided among the threads, rounded up), so that one thread
    /// does not take everything while another waits; `body` gets the batch and calls `finished`
    /// as each job ends, which frees its place at once.
    public init(threads: Int, capacity: Int, name: String, batch: Int,
                body: @escaping @Sendable ([Job], _ finished: (Int) -> Void, HandlerPool<Job>) -> Void) {
        precondition(threads > 0 && capacity > 0 && batch > 0)
        self.capacity = capacity
        self.threadCount = threads
        self.threads = (1...threads).map { index in
            JoinableThread(name: "\(name)-\(index)") { [unowned self] in self.runBatches(batch, body) }
        }
    }

    /// Queues `job`; returns `false` (and keeps nothing) when the queue is full or closing.
    @discardableResult
    @inlinable
    public func submit(_ job: Job) -> Bool {
        condition.withLock {
            guard !closing, queue.count < capacity else { return false }
            queue.append(job)
            queuedCount.store(queue.count, ordering: .relaxed)
            condition.signal()
            return true
        }
    }

    /// Queues the longest prefix of `jobs` that fits, under one lock; returns how many were
    /// queued (0 when closing). The rest are not kept.
    @inlinable
    public func submit<C: Collection>(contentsOf jobs: C) -> Int where C.Element == Job {
        condition.withLock {
            guard !closing else { return 0 }
            let count = min(jobs.count, capacity - queue.count)
            guard count > 0 else { return 0 }
            queue.append(contentsOf: jobs.prefix(count))
            queuedCount.store(queue.count, ordering: .relaxed)
            for _ in 0..<min(count, threadCount) { condition.signal() }
            return count
        }
    }

    /// Removes and returns every job that no thread has started, oldest first.
    public func takeUnstarted() -> [Job] {
        condition.withLock {
            let jobs = Array(queue)
            queue.removeAll()
            queuedCount.store(0, ordering: .relaxed)
            return jobs
        }
    }

    /// Jobs queued plus jobs running.
    public var outstanding: Int { condition.withLock { queue.count + busy } }

    /// Jobs waiting for a thread. Reads no lock: by the time the caller looks, it may be stale.
    @inlinable
    public var queued: Int { queuedCount.load(ordering: .relaxed) }

    /// Jobs a thread is running now.
    public var running: Int { condition.withLock { busy } }

    /// Stops accepting jobs. Threads run what is still queued, then exit.
    public func close() {
        condition.withLock {
            closing = true
            condition.broadcast()
        }
    }

    /// Closes the pool and waits for every thread to exit.
    public func join() {
        close()
        for thread in threads { thread.join() }
    }

    @inlinable
    func run(_ body: @Sendable (Job, HandlerPool<Job>) -> Void) {
        var finished = false
        while let job = next(finishedOne: finished) {
            body(job, self)
            finished = true
        }
    }

    func runBatches(_ limit: Int, _ body: ([Job], (Int) -> Void, HandlerPool<Job>) -> Void) {
        while let jobs = nextBatch(limit) {
            var unfinished = jobs.count
            body(jobs, { count in
                let ended = min(count, unfinished)
                unfinished -= ended
                self.condition.withLock { self.busy -= ended }
            }, self)
            if unfinished > 0 { condition.withLock { busy -= unfinished } }
        }
    }

    /// Waits for queued jobs and takes this thread's share of them, at most `limit`; `nil` once
    /// the pool is closing and its queue is empty.
    func nextBatch(_ limit: Int) -> [Job]? {
        condition.withLock {
            while true {
                if !queue.isEmpty {
                    let share = min(limit, (queue.count + threadCount - 1) / threadCount)
                    let jobs = Array(queue.prefix(share))
                    queue.removeFirst(share)
                    queuedCount.store(queue.count, ordering: .relaxed)
                    busy += share
                    return jobs
                }
                if closing { return nil }
                condition.wait()
            }
        }
    }

    /// Ends the thread's previous job (if `finishedOne`) and waits for the next; `nil` once
    /// the pool is closing and its queue is empty.
    @inlinable
    func next(finishedOne: Bool) -> Job? {
        condition.withLock {
            if finishedOne { busy -= 1 }
            while true {
                if let job = queue.popFirst() {
                    queuedCount.store(queue.count, ordering: .relaxed)
                    busy += 1
                    return job
                }
                if closing { return nil }
                condition.wait()
            }
        }
    }
}
