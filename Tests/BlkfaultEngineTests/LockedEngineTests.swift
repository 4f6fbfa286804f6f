import Testing
import Dispatch
import BlkfaultEngine

/// LockedEngine's futex word (blkfault_lock.h) from several threads at once: every body
/// runs alone. A counter outside the engine, bumped with a plain read and write inside
/// the lock, loses updates when two bodies overlap; under ThreadSanitizer (scripts/test)
/// the engine's own state, written by every request, must show no race either.
@Suite struct LockedEngineTests {
    @Test func bodiesNeverOverlap() throws {
        let cluster: UInt64 = 1024
        let file = freshQcow2()
        var engine = ImageEngine(rules: try RuleFile.parse(Array("".utf8), fileName: "test.cfg"), file: file)
        engine.noteOpen(writable: true)
        let locked = LockedEngine(engine)
        let threads = 8, rounds = 1_000
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        let inside = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        inside.initialize(to: 0)
        defer { inside.deallocate() }
        let overlaps = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        overlaps.initialize(to: 0)
        defer { overlaps.deallocate() }
        nonisolated(unsafe) let shared = (counter, inside, overlaps)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<rounds {
                // Data reads across the image: the engine classifies each and may learn.
                let op = Operation(.read, offset: 64 * cluster + UInt64((t * rounds + i) % 512) * cluster, length: 512)
                locked.withLock { engine in
                    shared.1.pointee += 1
                    if shared.1.pointee != 1 { shared.2.pointee += 1 }
                    _ = engine.before(op, file: file)
                    let value = shared.0.pointee
                    shared.0.pointee = value + 1
                    shared.1.pointee -= 1
                }
            }
        }
        #expect(overlaps.pointee == 0)
        #expect(counter.pointee == threads * rounds)
    }
}
