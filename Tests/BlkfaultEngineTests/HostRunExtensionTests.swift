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

/// A partial write into a preallocated zero cluster (iotest 066): QEMU keeps the host
/// cluster and zero-fills it first (cluster_alloc_space), then writes the data.
@Suite struct PreallocatedZeroClusterTests {
    @Test func theZeroFillOfAKnownDataClusterRaisesClusterAllocSpace() throws {
        var r = try HostRunExtensionTests().image(nextClusterUsed: false)
        r.open()
        r.read(68608, 1024)
        let op = Operation(.writeZeroes, offset: 69632, length: 1024)
        let step = r.engine.before(op, file: r.file)
        #expect(step.events == [.clusterAllocSpace, .pwritevZero])
        // Not for a part of a cluster (no zero-fill of QEMU's is that).
        let part = r.engine.before(Operation(.writeZeroes, offset: 69632, length: 512), file: r.file)
        #expect(!part.events.contains(.clusterAllocSpace))
    }
}
