import Testing
import BlkfaultEngine

/// qcow2_detect_metadata_preallocation (QEMU 7.2, block status over file-posix): an fstat
/// for the allocated size, then the refcounts of every cluster from 0, with no event.
/// Over blkdebug QEMU skips it (no allocated size), so those reads raise nothing; an
/// allocation's free-space search reads the same refblock and raises cluster_alloc first.
@Suite struct MetadataPreallocationCheckTests {
    func stat(_ r: inout Replay) -> Step { r.engine.before(Operation(.stat), file: r.file) }

    @Test func refblockReadsAfterAnFstatAreTheCheckNotAnAllocation() throws {
        var r = try Replay(freshQcow2(), rules: "[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"5\"\nonce = \"off\"\n")
        r.open()
        let s = stat(&r)
        #expect(s.events == [] && s.decision == .perform)
        let check = r.read(2048, 1024)
        #expect(check.events == [] && check.decision == .perform)
        // The allocation that follows finds the refblock cached: cluster_alloc comes with
        // its write (and fails it, once off).
        let w = r.write(r.file.size, [UInt8](repeating: 0xcd, count: 1024))
        #expect(w.events.first == .clusterAlloc)
        #expect(w.decision == .fail(errno: 5))
    }

    @Test func withoutAnFstatTheFirstRefblockReadIsTheFreeSpaceSearch() throws {
        var r = try Replay(freshQcow2())
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
    }

    @Test func theCheckEndsAtTheNextOtherRequest() throws {
        var r = try Replay(freshQcow2())
        r.open()
        _ = stat(&r)
        r.read(3072, 1024)  // an L2-sized read of the L1 table: not a refblock
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
    }

    @Test func anFstatAtOpenDoesNotTakeTheNoneEvent() throws {
        var r = try Replay(freshQcow2())
        #expect(stat(&r).events == [])
        #expect(r.read(0, 112).events == [.none])
    }
}
