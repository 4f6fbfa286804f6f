import Testing
import BlkfaultEngine

/// qemu-img amend -o compat=0.10 (QEMU 7.2 qcow2_downgrade, lined up with real blkdebug's
/// events, Tests/parity/tools/events_diff.py; --full --sample 38/40): the header is
/// rewritten (a whole cluster at 0), then expand_zero_clusters_in_l1 reads the refcount
/// block for each L2 table's refcount (qcow2_get_refcount: no event) and loads the table.
@Suite struct AmendDowngradeTests {
    func image() throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67, 68]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: be64((1 << 63) | 69632))
        return try Replay(setup.file, rules: "[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"5\"\n")
    }

    @Test func theRefcountReadAfterTheHeaderRewriteIsNoAllocation() throws {
        var r = try image()
        r.open()
        let header = r.file.read(offset: 0, count: 1024)!
        #expect(r.write(0, header).events == [.pwritev])
        #expect(r.read(2048, 1024).events == [])
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(68608, 1024).decision == .perform)
    }
}
