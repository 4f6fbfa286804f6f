import Testing
import BlkfaultEngine

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
