import Testing
import BlkfaultEngine
import Glibc

/// Learning an L2 table from the call's buffer in place, with its entries' bits set per
/// bitmap word, learns what the gathered copy with one insert per entry learnt.
@Suite(.serialized) struct InPlaceLearningTests {
    /// What the stand-in for the preload's hook hands out (a C function pointer captures nothing).
    /// Only on the test's own thread: other suites' engines run in parallel.
    nonisolated(unsafe) static var buffer = UnsafeRawBufferPointer(start: nil, count: 0)
    nonisolated(unsafe) static var owner = pthread_self()

    @Test func bitsSetThroughWordsEqualSingleInserts() {
        var generator = SystemRandomNumberGenerator()
        var single = ClusterSet(), bulk = ClusterSet()
        var indices: [UInt64] = (0..<3000).map { _ in UInt64.random(in: 0..<20_000, using: &generator) }
        indices += (100..<700).map { UInt64($0) }  // a run, and repeats of the random ones
        for i in indices { single.insert(i) }
        bulk.insert(19_999)  // grows the bitmap to hold them all
        single.insert(19_999)
        bulk.withWords { words, added in
            for i in indices {
                let old = words[Int(i >> 6)]
                words[Int(i >> 6)] = old | 1 << (i & 63)
                if old & 1 << (i & 63) == 0 { added += 1 }
            }
        }
        #expect(bulk.count == single.count)
        #expect(bulk.count == Set(indices + [19_999]).count)
        for i in UInt64(0)..<20_100 { #expect(bulk.contains(i) == single.contains(i), "index \(i)") }
    }

    /// An index at the bitmap's limit lives in the far set even after the bitmap doubled past it.
    @Test func bitmapNeverGrowsPastItsLimit() {
        let limit: UInt64 = 1 << 27  // ClusterSet.bitmapLimit
        var set = ClusterSet()
        set.insert(limit / 2 + 64)   // grows to just over half the limit
        set.insert(limit - 1)        // would double past the limit
        set.insert(limit + 5)        // the far set
        #expect(set.contains(limit + 5))
        #expect(set.contains(limit - 1))
        #expect(!set.contains(limit + 6))
        #expect(set.count == 3)
    }

    @Test func bufferInPlaceLearnsWhatGatheredBytesLearn() throws {
        let cluster: UInt64 = 1024
        var copied = try Replay(freshQcow2(), rules: "")
        copied.open()
        let table = 100 * cluster  // past the L1 table (clusters 3..<67)
        // An L2 table: a run, a gap, scattered entries, one far past the bitmap's reach.
        var l2 = l2Slice(size: Int(cluster), host: 200 * cluster, count: 70, cluster: cluster)
        for (slot, host) in [(80, 400 * cluster), (81, 399 * cluster), (90, 5000 * cluster), (91, (1 << 40) * cluster)] {
            l2.replaceSubrange(slot * 8..<slot * 8 + 8, with: be64((1 << 63) | host))
        }
        copied.file.write(offset: table, data: l2)
        copied.write(copied.engine.shadow!.header.l1TableOffset, be64((1 << 63) | table))
        var inPlace = copied
        copied.read(table, cluster)

        // The preload's way: the buffer in place; the gathering closure must stay unused.
        var gathered = 0
        let op = Operation(.read, offset: table, length: cluster) { from, count in
            gathered += 1
            return Array(l2[from..<from + count])
        }
        let step = inPlace.engine.before(op, file: inPlace.file)
        #expect(step.decision == .perform)
        l2.withUnsafeBytes { raw in
            InPlaceLearningTests.buffer = raw
            InPlaceLearningTests.owner = pthread_self()
            Operation.currentBuffer = { length in
                guard pthread_equal(pthread_self(), InPlaceLearningTests.owner) != 0 else { return nil }
                length.pointee = InPlaceLearningTests.buffer.count
                return InPlaceLearningTests.buffer.baseAddress
            }
            _ = inPlace.engine.after(op, succeeded: true, file: inPlace.file)
            Operation.currentBuffer = nil
        }
        #expect(gathered == 0)
        let a = copied.engine.shadow!, b = inPlace.engine.shadow!
        #expect(a.dataClusters.count == 74)
        #expect(b.dataClusters.count == a.dataClusters.count)
        for c in UInt64(0)..<6000 { #expect(b.region(at: c * cluster) == a.region(at: c * cluster), "cluster \(c)") }
        #expect(b.region(at: (1 << 40) * cluster) == .data)
    }
}
