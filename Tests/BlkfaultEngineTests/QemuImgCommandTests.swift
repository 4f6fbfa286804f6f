import Testing
import BlkfaultEngine

/// I/O sequences of qemu-img snapshot -d, convert -n and commit, as QEMU 7.2 does them
/// (measured with real blkdebug: `bdrv_debug_event` breakpoints against the image's
/// system calls), replayed through the engine: each I/O must carry the events
/// QEMU raised before it.
@Suite struct QemuImgCommandTests {
    /// 4 MiB image, 1 KiB clusters, one snapshot sharing everything with the active
    /// layer: reftable @1024, refblock @2048, L1 @3072 (32 entries), L2 @4096, data
    /// @5120 and @6144 (refcount 2), snapshot L1 @7168, snapshot table @8192.
    func imageWithSnapshot() -> MemoryImage {
        var image = freshQcow2(size: 4 << 20)
        image.write(offset: 60, data: [0, 0, 0, 1] + be64(8192))     // nb_snapshots, snapshots_offset
        var refblock = [UInt8](repeating: 0, count: 1024)
        for (cluster, count) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 1), (8, 1)] {
            refblock[cluster * 2 + 1] = UInt8(count)
        }
        image.write(offset: 2048, data: refblock)
        image.write(offset: 3072, data: be64(4096))                    // shared: no COPIED flag
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<16, with: be64(5120) + be64(6144))
        image.write(offset: 4096, data: l2)
        image.write(offset: 5120, data: [UInt8](repeating: 1, count: 2048))
        var snapL1 = [UInt8](repeating: 0, count: 1024)
        snapL1.replaceSubrange(0..<8, with: be64(4096))
        image.write(offset: 7168, data: snapL1)
        // l1_table_offset, l1_size, id and name lengths, dates, vm state, extra size; "1", "s1"
        var entry = be64(7168) + [0, 0, 0, 32] + [0, 1, 0, 2] + [UInt8](repeating: 0, count: 24)
        entry += Array("1s1".utf8)
        image.write(offset: 8192, data: entry + [UInt8](repeating: 0, count: 1024 - entry.count))
        return image
    }

    /// qemu-img snapshot -d of the only snapshot: the empty table's allocation and
    /// two flushes with no I/O, the old table's free, the refcount walk (-1) over the
    /// snapshot's L1 ending in a full flush, the L1 table's free, then the walk (0)
    /// over the active table, whose flush writes the L2 table's new COPIED flags.
    @Test func snapshotDeleteRaisesTheWalksFreesAndFlushes() throws {
        var r = try Replay(imageWithSnapshot())
        r.open()
        #expect(r.write(60, [0, 0, 0, 0] + be64(0)).events == [.clusterAlloc, .flushToOS, .flushToOS, .pwritev])
        #expect(r.flush().events == [])
        // qcow2_free_clusters of the old table: its refblock read is a cache miss.
        #expect(r.read(2048, 1024).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        #expect(r.discard(8192, 1024).events == [])
        #expect(r.read(7168, 256).events == [])
        #expect(r.read(4096, 1024).events == [.l2Load])
        // Two data clusters and the L2 table: three refcount updates, then bdrv_flush.
        #expect(r.flush().events == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                                     .refblockAlloc, .refblockLoad, .flushToOS])
        var refblock = r.file.read(offset: 2048, count: 1024)!
        for c in [4, 5, 6] { refblock[c * 2 + 1] = 1 }
        refblock[7 * 2 + 1] = 1
        #expect(r.write(2048, refblock).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        // The snapshot's L1 table is freed; its discard follows.
        #expect(r.discard(7168, 1024).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<16, with: be64((1 << 63) | 5120) + be64((1 << 63) | 6144))
        #expect(r.write(4096, l2).events == [.flushToOS, .l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(2048, refblock).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        // The walk set the L1 entry's COPIED flag: the whole active table is written
        // (bdrv_pwrite_sync, no event), 256 bytes here, 8 with iotest 217's one entry.
        #expect(r.write(3072, be64((1 << 63) | 4096) + [UInt8](repeating: 0, count: 248)).events == [.pwritev])
        #expect(r.flush().events == [])
    }

    /// qemu-io `write 512 512` into clusters shared with the snapshot: l2_allocate copies
    /// the shared table; the old table's free, the new cluster's allocation and cow_read
    /// come before the COW read; after the data write, the request's cache-dependency
    /// flushes (an fdatasync, the old data cluster's free with a refblock write-back and
    /// an fdatasync) come before its full flush.
    @Test func writeIntoClustersSharedWithASnapshot() throws {
        var r = try Replay(imageWithSnapshot())
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        var refblock = r.file.read(offset: 2048, count: 1024)!
        refblock[9 * 2 + 1] = 1
        #expect(r.write(2048, refblock).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.read(4096, 1024).events == [.l2AllocCowRead, .l2Load])
        let oldL2 = r.file.read(offset: 4096, count: 1024)!
        #expect(r.write(9216, oldL2).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(3072, be64((1 << 63) | 9216)).events == [.l1Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.read(5120, 512).events == [.clusterFree, .refblockAlloc, .refblockLoad,
                                             .clusterAlloc, .refblockAlloc, .refblockLoad, .cowRead, .readAio])
        #expect(r.write(10240, [UInt8](repeating: 2, count: 1024)).events == [.writeAio, .cowWrite, .pwritev])
        #expect(r.flush().events == [])
        refblock[4 * 2 + 1] = 1; refblock[5 * 2 + 1] = 1; refblock[10 * 2 + 1] = 1
        #expect(r.write(2048, refblock).events == [.clusterFree, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        var l2 = oldL2
        l2.replaceSubrange(0..<8, with: be64((1 << 63) | 10240))
        #expect(r.write(9216, l2).events == [.refblockAlloc, .refblockLoad, .flushToOS, .l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(2048, refblock).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    /// qemu-img convert -n (cache=unsafe, no syncs): l2_allocate's L2 cache flush
    /// writes every dirty table; l2_alloc_write precedes its first write even when
    /// that is the previous table's, and none of them is a full flush.
    @Test func l2AllocateFlushRaisesL2AllocWriteBeforeItsFirstWrite() throws {
        var r = try Replay(freshQcow2())
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67])).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(68608, [UInt8](repeating: 0, count: 1024)).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.write(3072, be64((1 << 63) | 68608)).events == [.l1Update, .pwritev])
        // The next table; the first one is dirty (zero flags set by write-zeroes).
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 68])).events == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(68608, be64(1)).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.write(69632, [UInt8](repeating: 0, count: 1024)).events == [.l2Update, .pwritev])
        #expect(r.write(3080, be64((1 << 63) | 69632)).events == [.l1Update, .pwritev])
    }

    /// qemu-img commit empties the top image (make_completely_empty), 64 MiB, 64 KiB
    /// clusters: reftable @65536, refblock @131072, L1 @196608.
    @Test func commitEmptyingTheImageRaisesMakeCompletelyEmptysEvents() throws {
        var r = try Replay(freshQcow2(size: 64 << 20, clusterBits: 16))
        r.open()
        #expect(r.write(72, be64(1)).events == [.pwritev])             // dirty bit
        #expect(r.flush().events == [])
        #expect(r.writeZeroes(196608, 65536).events == [.l1Update, .pwritevZero])
        #expect(r.writeZeroes(65536, 196608).events == [.emptyImagePrepare, .pwritevZero])
        #expect(r.write(40, be64(196608) + be64(65536) + [0, 0, 0, 1]).events == [.l1Update, .reftableUpdate, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(65536, be64(131072)).events == [.refblockAlloc, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.read(131072, 65536).events == [.clusterAlloc])
        var refblock = [UInt8](repeating: 0, count: 65536)
        for c in 0..<4 { refblock[c * 2 + 1] = 1 }
        #expect(r.write(131072, refblock).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.truncate(262144).events == [])
        // The close's full flush.
        #expect(r.flush().events == [.flushToOS])
    }
}

extension Replay {
    @discardableResult
    mutating func discard(_ offset: UInt64, _ length: UInt64) -> Step {
        perform(Operation(.discard, offset: offset, length: length))
    }

    @discardableResult
    mutating func writeZeroes(_ offset: UInt64, _ length: UInt64) -> Step {
        let step = perform(Operation(.writeZeroes, offset: offset, length: length))
        if step.decision == .perform { file.write(offset: offset, data: [UInt8](repeating: 0, count: Int(length))) }
        return step
    }

    @discardableResult
    mutating func truncate(_ size: UInt64) -> Step {
        let step = perform(Operation(.truncate, offset: size, length: 0))
        if step.decision == .perform, size < file.size { file.bytes.removeLast(Int(file.size - size)) }
        return step
    }

    private mutating func perform(_ op: Operation) -> Step {
        let step = engine.before(op, file: file)
        if step.decision == .perform { _ = engine.after(op, succeeded: true, file: file) }
        return step
    }
}
