import Testing
import BlkfaultEngine

/// The free of an L1 table replaced by L1 growth, when the old table spans several
/// refcount blocks: iotest 026's refgrowb (`write -b 0 64M`, 512-byte clusters), replayed
/// from QEMU 7.2's I/O as Tests/parity/tools/blkdebug_events.py recorded it under real
/// blkdebug (`write -b 0 64k` has the same start). The old table (clusters 3...514) is
/// covered by the refcount blocks @1024, @263680 and @264192.
@Suite struct OldTableFreeTests {
    func refblock(_ clusters: [Int]) -> [UInt8] { RefblockAllocationTests().refblock(512, clusters) }

    /// The image after the new L1 table (@264704, 768 clusters) was written, before the
    /// header switches to it.
    func grown() throws -> Replay {
        var file = RefblockAllocationTests().fresh512()
        file.write(offset: 264704, data: [UInt8](repeating: 0, count: 393216))
        return try Replay(file)
    }

    @Test func theFreeLoadsEachBlockAndTheNextWriteBackIsTheL2Allocation() throws {
        var r = try grown()
        r.open()
        #expect(r.write(36, be32(49152) + be64(264704)).events == [.l1GrowActivateTable, .pwritev])
        #expect(r.flush().events == [])
        // qcow2_free_clusters over the old table: one refcount block per cache miss.
        #expect(r.read(1024, 512).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        #expect(r.read(263680, 512).events == [.refblockAlloc, .refblockLoad])
        #expect(r.read(264192, 512).events == [.refblockAlloc, .refblockLoad])
        // l2_allocate: cluster_alloc (cache hits), then its refcount cache flush, which
        // writes the block only the free dirtied first. No flush_to_os: no full flush.
        #expect(r.write(263680, refblock([])).events == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(264192, refblock([3, 4])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.write(1024, refblock([0, 1, 2, 3])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    /// Before the fix: the first write-back was taken for a full flush's (flush_to_os), so
    /// a once=off rule on flush_to_os failed the L1 growth's allocation mid-request.
    @Test func aFlushToOSRuleLeavesTheAllocationAlone() throws {
        var file = RefblockAllocationTests().fresh512()
        file.write(offset: 264704, data: [UInt8](repeating: 0, count: 393216))
        var r = try Replay(file, rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"off\"\n")
        r.open()
        r.write(36, be32(49152) + be64(264704))
        r.flush()
        for block: UInt64 in [1024, 263680, 264192] { r.read(block, 512) }
        #expect(r.write(263680, refblock([])).decision == .perform)
        #expect(r.write(264192, refblock([3, 4])).decision == .perform)
    }

    /// Under load a data write finishing after the last sync makes the L2 cache flush that
    /// the first eviction of a dirty block starts (the free made the refcount cache depend
    /// on the L2 cache) sync the file: an fdatasync between the free's reads and the
    /// write-backs (refgrow, 1 run in 11 with `flush_to_disk` once=on). It ends no
    /// request: the write-backs are still the allocation's.
    @Test func aSyncBeforeTheWriteBacksIsNoFullFlush() throws {
        var r = try grown()
        r.open()
        r.write(36, be32(49152) + be64(264704))
        r.flush()
        for block: UInt64 in [1024, 263680, 264192] { r.read(block, 512) }
        #expect(r.flush().events == [])
        #expect(r.write(263680, refblock([])).events == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(264192, refblock([3, 4])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.write(1024, refblock([0, 1, 2, 3])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> UInt32(24 - 8 * $0)) & 0xff) } }
}
