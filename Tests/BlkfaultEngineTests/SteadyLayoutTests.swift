import Testing
import BlkfaultEngine

/// When the preload's steady pre-filter empties its bitmap of whole-data clusters: when
/// `ImageEngine.layoutVersion` changes (Steady.swift's publishSteady). It must change
/// whenever a cluster may stop being wholly guest data, and stay put for the shadow
/// model's bookkeeping, or the filter would empty itself on ordinary requests.
@Suite struct SteadyLayoutTests {
    /// `wholeDataWord` of clusters 0..<256 (the test images' 1 KiB clusters: all they use).
    static func words(_ engine: ImageEngine) -> [UInt64] { (0..<4).map { engine.wholeDataWord($0) } }

    /// Runs `body`; whether the layout version changed. Fails if a cluster stopped being
    /// whole guest data while it did not (the filter would keep skipping requests on it).
    @discardableResult
    static func changesLayout(_ r: inout Replay, _ what: String, _ body: (inout Replay) -> Void) -> Bool {
        let before = words(r.engine), version = r.engine.layoutVersion
        body(&r)
        let lost = zip(before, words(r.engine)).contains { $0 & ~$1 != 0 }
        let changed = r.engine.layoutVersion != version
        #expect(!lost || changed, "\(what): a cluster stopped being guest data, the layout version stayed")
        return changed
    }

    static func discard(_ r: inout Replay, _ offset: UInt64, _ length: UInt64) {
        let op = Operation(.discard, offset: offset, length: length)
        if r.engine.before(op, file: r.file).decision == .perform { _ = r.engine.after(op, succeeded: true, file: r.file) }
    }

    /// L2 table at 68608 (cluster 67) mapping 128 data clusters from 69632 (68...195).
    func allocated() throws -> Replay {
        var r = try Replay(freshQcow2(), rules: SteadyPathTests.benchRules)
        r.allocateDataClusters(128)
        #expect(Self.words(r.engine)[1] >> 4 == (1 << 60) - 1, "clusters 68...127 are data")
        return r
    }

    @Test func bookkeepingKeepsTheFilter() throws {
        var r = try allocated()
        #expect(!Self.changesLayout(&r, "header read") { $0.read(0, 112) })
        #expect(!Self.changesLayout(&r, "L1 table read again") { $0.read(3072, 1024) })
        #expect(!Self.changesLayout(&r, "refcount block read") { $0.read(2048, 1024) })
        #expect(!Self.changesLayout(&r, "L2 table read again") { $0.read(68608, 1024) })
        #expect(!Self.changesLayout(&r, "data read") { $0.read(69632, 4096) })
        #expect(!Self.changesLayout(&r, "data rewritten") { $0.write(69632, [UInt8](repeating: 1, count: 1024)) })
        #expect(!Self.changesLayout(&r, "flush") { _ = $0.flush() })
        // Zero flags: the same table with entries 4...7 preallocated zero clusters, then a
        // write into one of them (QEMU clears its flag in the cached entry).
        var slice = l2Slice(size: 1024, host: 69632, count: 128, cluster: 1024)
        for k in 4..<8 { slice[k * 8 + 7] |= 1 }
        #expect(!Self.changesLayout(&r, "zero flags learnt") { $0.write(68608, slice); _ = $0.flush() })
        #expect(r.engine.shadow?.zeroFlagClusters.count == 4)
        #expect(!Self.changesLayout(&r, "zero flag cleared") { $0.write(69632 + 4 * 1024, [UInt8](repeating: 2, count: 1024)) })
        #expect(r.engine.shadow?.zeroFlagClusters.count == 3, "the write cleared a flag (a change to the shadow model)")
    }

    @Test func clustersThatStopBeingDataEmptyTheFilter() throws {
        var r = try allocated()
        #expect(Self.changesLayout(&r, "data cluster discarded") { Self.discard(&$0, 69632 + 8 * 1024, 1024) })
        #expect(Self.words(r.engine)[1] >> 12 & 1 == 0, "cluster 76 is no longer data")
        // A corrupt L1 entry naming data cluster 80 as an L2 table: it is a table now.
        #expect(Self.changesLayout(&r, "data cluster named an L2 table") { $0.write(3080, be64((1 << 63) | 80 * 1024)) })
        #expect(Self.words(r.engine)[1] >> 16 & 1 == 0, "cluster 80 is a table")
        // A header naming another L1 table: clusters in the new table's place are no longer data.
        var header = r.file.read(offset: 0, count: 112) ?? []
        let l1Offset: UInt64 = 100 * 1024
        for i in 0..<8 { header[40 + i] = UInt8(truncatingIfNeeded: l1Offset >> UInt64(56 - 8 * i)) }
        #expect(Self.changesLayout(&r, "L1 table moved over data") { $0.write(0, header) })
    }
}
