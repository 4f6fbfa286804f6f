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

/// After an L2 load whose slice has an allocated entry followed by an unallocated one,
/// a refblock read is the free check of a run extension (qcow2_alloc_clusters_at, no
/// cluster_alloc) only if the host cluster after that entry is free; otherwise QEMU
/// allocates anew (cluster_alloc): e.g. a bitmap table right after the data (bitmapw).
@Suite struct HostRunExtensionTests {
    /// 1 KiB clusters: L2 table @68608 (67), guest cluster 0 at @69632 (68).
    func image(nextClusterUsed: Bool) throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: nextClusterUsed ? [67, 68, 69] : [67, 68]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: be64((1 << 63) | 69632) + [UInt8](repeating: 0, count: 1016))
        setup.file.write(offset: 69632, data: [UInt8](repeating: 0xcd, count: nextClusterUsed ? 2048 : 1024))
        return try Replay(setup.file)
    }

    @Test func aFreeSuccessorMakesTheReadARunExtensionsCheck() throws {
        var r = try image(nextClusterUsed: false)
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [])
    }

    @Test func anOccupiedSuccessorMakesItANewAllocationsSearch() throws {
        var r = try image(nextClusterUsed: true)
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
    }
}
