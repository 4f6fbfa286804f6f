import Testing
import BlkfaultEngine

/// `qemu-img amend -o compat=0.10` of an image without zero clusters, replayed from the
/// I/O real blkdebug showed (tools/events_diff.py; the parity case cluster_alloc on
/// `amend`, a no-injection difference found by --full --sample 4/40): after the header
/// write, qcow2_expand_zero_clusters looks up the L2 table's refcount (a refcount block
/// read, no event), then loads the table (l2_load); nothing is allocated. blkfault took
/// the refcount block read for an allocation's and raised cluster_alloc there.
/// 1 KiB clusters: refcount block @2048, L2 table @68608 under L1 entry 0, data @69632.
@Suite struct DowngradeRefcountLookupTests {
    func image(rules: String = "") throws -> Replay {
        let t = CompressionAndShrinkTests()
        let l2 = l2Slice(size: 1024, host: 69632, count: 1, cluster: 1024)
        let setup = try t.imageWithL2(l2, refcounted: [67, 68])
        return try Replay(setup.file, rules: rules)
    }

    /// The amend's I/O up to the L2 load; returns the refcount block read's step.
    func amend(_ r: inout Replay, downgrade: Bool) -> (Step, Step) {
        r.engine.noteDowngradeCommand(downgrade)
        r.open()
        r.read(504, 8)
        r.write(0, r.file.read(offset: 0, count: 1024)!)
        let lookup = r.read(2048, 1024)
        return (lookup, r.read(68608, 1024))
    }

    @Test func theCommandLineTellsADowngrade() {
        #expect(ProgramCommand(arguments: ["qemu-img", "amend", "-f", "qcow2", "-o", "compat=0.10", "t.qcow2"]).isQemuImgDowngrade)
        #expect(ProgramCommand(arguments: ["/usr/bin/qemu-img", "amend", "-o", "lazy_refcounts=off,compat=v2", "t"]).isQemuImgDowngrade)
        #expect(ProgramCommand(arguments: ["qemu-img", "amend", "-ocompat=0.10", "t"]).isQemuImgDowngrade)
        #expect(!ProgramCommand(arguments: ["qemu-img", "amend", "-o", "refcount_bits=64", "t"]).isQemuImgDowngrade)
        #expect(!ProgramCommand(arguments: ["qemu-img", "amend", "-o", "compat=1.1", "t"]).isQemuImgDowngrade)
        #expect(!ProgramCommand(arguments: ["qemu-img", "create", "-o", "compat=0.10", "t", "1G"]).isQemuImgDowngrade)
    }

    @Test func theRefcountLookupBeforeTheL2LoadAllocatesNothing() throws {
        var r = try image()
        let (lookup, load) = amend(&r, downgrade: true)
        #expect(lookup.events == [])
        #expect(load.events == [.l2Load])
    }

    /// Any other writable process: the same read starts an allocation.
    @Test func withoutTheDowngradeTheReadIsAnAllocations() throws {
        var r = try image()
        let (lookup, _) = amend(&r, downgrade: false)
        #expect(lookup.events == [.clusterAlloc])
    }

    /// The parity case: a cluster_alloc rule (once off) fails nothing in the downgrade.
    @Test func aClusterAllocRuleFailsNothing() throws {
        var r = try image(rules: "[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"5\"\nonce = \"off\"\n")
        let (lookup, load) = amend(&r, downgrade: true)
        #expect(lookup.decision == .perform)
        #expect(load.decision == .perform)
        #expect(r.flush().decision == .perform)
    }
}
