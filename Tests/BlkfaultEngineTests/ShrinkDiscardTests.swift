import Testing
import BlkfaultEngine

/// `qemu-img resize --shrink` of an image with data past the new end, replayed from
/// QEMU 7.2's I/O as Tests/parity/tools/events_diff.py recorded it under real blkdebug:
/// qcow2_cluster_discard loads the L2 slice, frees the cluster (cluster_free,
/// refblock_alloc, refblock_load: the refcount block misses the cache) and only then
/// discards it. 1 KiB clusters: L2 table @68608 under L1 entry 5, data @69632.
@Suite struct ShrinkDiscardTests {
    func image(rules: String = "") throws -> Replay {
        let t = CompressionAndShrinkTests()
        let l2 = l2Slice(size: 1024, host: 69632, count: 1, cluster: 1024)
        var setup = try t.imageWithL2(l2, l1Index: 5, refcounted: [67, 68])
        setup.file.write(offset: 69632, data: [UInt8](repeating: 0xcd, count: 1024))
        return try Replay(setup.file, rules: rules)
    }

    func discard(_ r: inout Replay, _ offset: UInt64, _ length: UInt64) -> Step {
        let op = Operation(.discard, offset: offset, length: length)
        let step = r.engine.before(op, file: r.file)
        if step.decision == .perform { _ = r.engine.after(op, succeeded: true, file: r.file) }
        return step
    }

    let shrink = ProgramCommand(arguments: ["qemu-img", "resize", "--shrink", "t.qcow2", "64M"])

    @Test func theShrinksRefblockReadAfterTheL2LoadIsTheFree() throws {
        var r = try image()
        r.engine.noteCommand(shrink)
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        // The discard itself carries no second free.
        #expect(discard(&r, 69632, 1024).events == [])
    }

    /// In qemu-io the same read may be a write extending the host run after 69632:
    /// blkfault assumes that (scenarios.UNDECIDABLE, discard) and raises the free at the discard.
    @Test func withoutTheShrinkTheFreeWaitsForTheDiscard() throws {
        var r = try image()
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [])
        #expect(discard(&r, 69632, 1024).events == [.clusterFree, .refblockAlloc, .refblockLoad])
    }

    /// The parity case refblock_alloc once=on on `shrink`: blkdebug fails the refcount
    /// block read ("qcow2_free_clusters failed"), and the discard goes through.
    @Test func aRuleOnRefblockAllocFailsTheRefblockRead() throws {
        var r = try image(rules: "[inject-error]\nevent = \"refblock_alloc\"\nerrno = \"28\"\nonce = \"on\"\n")
        r.engine.noteCommand(shrink)
        r.open()
        #expect(r.read(68608, 1024).decision == .perform)
        #expect(r.read(2048, 1024).decision == .fail(errno: 28))
        #expect(discard(&r, 69632, 1024).decision == .perform)
    }
}
