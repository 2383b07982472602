import Foundation
import Synchronization
import Testing
@testable import DroverPool

/// Waits, with a timeout, for a condition other threads make true.
final class Expectation: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func fulfill() { semaphore.signal() }
    func wait(seconds: Double) -> Bool { semaphore.wait(timeout: .now() + seconds) == .success }
}

@Suite("Handler pool")
struct HandlerPoolTests {
    @Test("every job runs exactly once, spread over the threads")
    func runsEveryJobOnce() {
        let seen = Mutex<[Int: Int]>([:])
        let threads = Mutex<Set<pthread_t>>([])
        let done = Expectation()
        let total = 2000
        let allStarted = Expectation()
        let pool = HandlerPool<Int>(threads: 4, capacity: 64, name: "test") { job in
            let distinct = threads.withLock { $0.insert(pthread_self()); return $0.count }
            if distinct == 4 { allStarted.fulfill() }
            // The first four jobs each hold their thread until four threads have run a job: a
            // held thread cannot take another, so they can only finish spread over all four.
            if job < 4 { _ = allStarted.wait(seconds: 30) }
            let count = seen.withLock { $0[job, default: 0] += 1; return $0.count }
            if count == total { done.fulfill() }
        }
        var submitted = 0
        while submitted < total {
            if pool.submit(submitted) { submitted += 1 } else { sched_yield() }
        }
        #expect(done.wait(seconds: 30))
        pool.join()
        #expect(seen.withLock { $0.count == total && $0.values.allSatisfy { $0 == 1 } })
        #expect(pool.outstanding == 0)
        #expect(threads.withLock { $0.count } == 4, "every thread ran jobs")
    }

    @Test("batches: a thread takes its share of what is queued, each job runs once, and a finished job frees its place at once")
    func batches() {
        let seen = Mutex<[Int: Int]>([:])
        let sizes = Mutex<[Int]>([])
        let done = Expectation()
        let gate = Expectation()
        let total = 1000
        let pool = HandlerPool<Int>(threads: 2, capacity: 100, name: "test", batch: 8) { jobs, finished, _ in
            sizes.withLock { $0.append(jobs.count) }
            if jobs.contains(0) { _ = gate.wait(seconds: 30) }  // hold the first batch until the queue is full
            for job in jobs {
                let count = seen.withLock { $0[job, default: 0] += 1; return $0.count }
                finished(1)
                if count == total { done.fulfill() }
            }
        }
        var submitted = 0
        while submitted < total {
            if pool.submit(submitted) {
                submitted += 1
                if submitted == 100 { gate.fulfill() }
            } else {
                sched_yield()
            }
        }
        #expect(done.wait(seconds: 30))
        pool.join()
        #expect(seen.withLock { $0.count == total && $0.values.allSatisfy { $0 == 1 } })
        #expect(sizes.withLock { $0.allSatisfy { (1...8).contains($0) } }, "never more than the batch limit")
        #expect(sizes.withLock { $0.contains { $0 > 1 } }, "a queue of many jobs is taken several at a time")
        #expect(pool.outstanding == 0, "every finished job freed its place")
    }

    @Test("the queue is bounded: submit says no when it is full")
    func bounded() {
        let gate = Expectation()
        let started = Expectation()
        let pool = HandlerPool<Int>(threads: 1, capacity: 2, name: "test") { _ in
            started.fulfill()
            _ = gate.wait(seconds: 30)
        }
        #expect(pool.submit(1))
        #expect(started.wait(seconds: 10))  // job 1 is running, the queue is empty
        #expect(pool.submit(2))
        #expect(pool.submit(3))
        #expect(!pool.submit(4))
        #expect(pool.outstanding == 3)
        gate.fulfill(); gate.fulfill(); gate.fulfill()
        pool.join()
    }

    @Test("takeUnstarted returns queued jobs in order, and they never run")
    func takeUnstarted() {
        let gate = Expectation()
        let started = Expectation()
        let ran = Mutex<[Int]>([])
        let pool = HandlerPool<Int>(threads: 1, capacity: 10, name: "test") { job in
            ran.withLock { $0.append(job) }
            started.fulfill()
            _ = gate.wait(seconds: 30)
        }
        pool.submit(0)
        #expect(started.wait(seconds: 10))
        for job in 1...5 { pool.submit(job) }
        #expect(pool.takeUnstarted() == [1, 2, 3, 4, 5])
        #expect(pool.running == 1)
        gate.fulfill()
        pool.join()
        #expect(ran.withLock { $0 } == [0])
    }

    @Test("join lets running jobs finish and refuses new ones")
    func joinFinishesRunning() {
        let finished = Mutex(0)
        let pool = HandlerPool<Int>(threads: 2, capacity: 10, name: "test") { _ in
            usleep(20_000)
            finished.withLock { $0 += 1 }
        }
        for job in 0..<6 { pool.submit(job) }
        pool.join()
        #expect(finished.withLock { $0 } == 6)
        #expect(!pool.submit(99))
    }
}
