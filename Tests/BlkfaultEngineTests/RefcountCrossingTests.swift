import Testing
import BlkfaultEngine

/// `qemu-io -c 'write 0 64M'` with 512-byte clusters (parity workload `refgrow`): each
/// chunk is one L2 table (l2_allocate) and 64 data clusters, a refcount block covers 256
/// clusters, so every few chunks an allocation reaches a block that is not there yet.
/// Replayed from QEMU 7.2's I/O as Tests/parity/tools/events_diff.py recorded it, with the
/// events real blkdebug raised there (cluster_alloc placed where blkfault raises it: at
/// the write-back, which blkdebug raises earlier or later with the data task's timing).
/// Each replay starts from the image state right before the window it reproduces.
@Suite struct RefcountCrossingTests {
    let cfg: UInt64 = 1 << 63  // QCOW_OFLAG_COPIED
    let c: UInt64 = 512
    let l1: UInt64 = 1536  // cluster 3

    /// A 64 MiB guest image with 512-byte clusters: header, reftable (cluster 1, 64
    /// entries), L1 table (clusters 3...34), refblock k at cluster `refblocks[k]`, and
    /// clusters 0...usedThrough in use (the refblocks too).
    func image(refblocks: [UInt64], usedThrough: UInt64, rules: String = "") throws -> Replay {
        var img = freshQcow2(size: 64 << 20, clusterBits: 9)
        let end = max(usedThrough, refblocks.max() ?? 0) + 1
        img.bytes += [UInt8](repeating: 0, count: Int(end * c) - img.bytes.count)
        for (k, b) in refblocks.enumerated() {
            img.bytes.replaceSubrange(Int(c) + 8 * k ..< Int(c) + 8 * k + 8, with: be64(b * c))
        }
        var used = Set(0...usedThrough)
        used.formUnion(refblocks)
        for cl in used {
            let b = refblocks[Int(cl / 256)]
            img.bytes[Int(b * c + (cl % 256) * 2 + 1)] = 1
        }
        return try Replay(img, rules: rules)
    }

    /// The refblock at cluster `at`, covering block `index`, with `setting` raised to 1 and
    /// `clearing` back to 0 (as the file holds it now).
    func block(_ r: Replay, at: UInt64, index: UInt64, setting: [UInt64] = [], clearing: [UInt64] = []) -> [UInt8] {
        var b = r.file.read(offset: at * c, count: Int(c)) ?? []
        if b.count < Int(c) { b += [UInt8](repeating: 0, count: Int(c) - b.count) }
        for cl in setting { b[Int(cl - index * 256) * 2 + 1] = 1 }
        for cl in clearing { b[Int(cl - index * 256) * 2 + 1] = 0 }
        return b
    }

    /// l2_allocate's tail after its refcount write-back: sync, the zeroed table, sync, its
    /// L1 entry, sync.
    func tableAndEntry(_ r: inout Replay, table: UInt64, l1Index: UInt64) {
        r.flush()
        r.write(table * c, [UInt8](repeating: 0, count: Int(c)))
        r.flush()
        r.write(l1 + 8 * l1Index, be64(cfg | table * c))
        r.flush()
    }

    /// A chunk's data: 64 clusters from `first`.
    @discardableResult
    func data(_ r: inout Replay, _ first: UInt64, count: UInt64 = 64) -> [BlkdebugEvent] {
        r.write(first * c, [UInt8](repeating: 0xcd, count: Int(count * c))).events
    }

    /// The L2 cache flush writing back a table whose entries link a data run.
    func tableWriteBack(_ r: inout Replay, table: UInt64, run: ClosedRange<UInt64>) -> [BlkdebugEvent] {
        var t = [UInt8](repeating: 0, count: Int(c))
        for (k, d) in run.enumerated() { t.replaceSubrange(8 * k ..< 8 * k + 8, with: be64(cfg | d * c)) }
        return r.write(table * c, t).events
    }

    /// Two chunks in block `b` (refblock at `rb`): table `t0` and its data, then table `t1`
    /// (the write-back holding t0's data), each linked; t0's data written last (its task
    /// ran late). Then chunk 2's data allocation is pending, its run starting at t1 + 1.
    func twoChunks(_ r: inout Replay, rb: UInt64, b: UInt64, t0: UInt64) {
        r.open()
        r.read(rb * c, c)
        r.write(rb * c, block(r, at: rb, index: b, setting: [t0]))
        tableAndEntry(&r, table: t0, l1Index: 0)
        r.write(rb * c, block(r, at: rb, index: b, setting: Array(t0 + 1 ... t0 + 65)))
        tableAndEntry(&r, table: t0 + 65, l1Index: 1)
        #expect(data(&r, t0 + 1) == [.writeAio, .pwritev])
    }

    /// The new refblock (cluster `at`, describing itself) and its hookup at reftable `index`.
    func newBlockAndHookup(_ r: inout Replay, at: UInt64, index: UInt64) -> [[BlkdebugEvent]] {
        let steps = [r.write(at * c, block(r, at: at, index: index, setting: [at])).events]
        r.flush()
        let hookup = r.write(c + 8 * index, be64(at * c)).events
        r.flush()
        return steps + [hookup]
    }

    /// Window 546 of the recorded run: chunk 2's data run starts at block 0's last cluster
    /// (255) and crosses into block 1, not there yet; chunk 1's late data write comes
    /// between chunk 2's L1 entry and the write-back. The write-back is
    /// alloc_refcount_block's L2 cache flush's dependency, not a table's (blkfault took the
    /// one new cluster at the block's end for a table in its last cluster).
    @Test func aRunFromTheBlocksLastClusterCrosses() throws {
        var r = try image(refblocks: [2], usedThrough: 188)
        twoChunks(&r, rb: 2, b: 0, t0: 189)
        #expect(r.write(2 * c, block(r, at: 2, index: 0, setting: [255])).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(tableWriteBack(&r, table: 189, run: 190...253) == [.l2Update, .pwritev])
        r.flush()
        let hook = newBlockAndHookup(&r, at: 319, index: 1)
        #expect(hook == [[.refblockAllocWrite, .refblockUpdatePart, .pwritev], [.refblockAllocHookup, .pwritev]])
        // The retry (undo block 0, redo blocks 0 and 1), then chunk 3's table (320).
        #expect(r.write(319 * c, block(r, at: 319, index: 1, setting: Array(256...318) + [320])).events
                == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                    .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(2 * c, block(r, at: 2, index: 0)).events == [.refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(320 * c, [UInt8](repeating: 0, count: Int(c))).events == [.l2AllocWrite, .l2Update, .pwritev])
    }

    /// Window 1796: chunk 2's whole run (64 clusters) ends at block 0's end; chunk 3's table
    /// is the allocation that needs block 1, and its retry after the hookup undoes nothing
    /// (one refblock_alloc refblock_load, not three, and no next allocation after it).
    @Test func aWholeRunEndingAtTheBlocksEndLeavesTheCrossingToTheTable() throws {
        var r = try image(refblocks: [2], usedThrough: 125)
        twoChunks(&r, rb: 2, b: 0, t0: 126)
        #expect(r.write(2 * c, block(r, at: 2, index: 0, setting: Array(192...255))).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .clusterAlloc, .refblockAlloc,
                    .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(tableWriteBack(&r, table: 126, run: 127...190) == [.l2Update, .pwritev])
        r.flush()
        let hook = newBlockAndHookup(&r, at: 257, index: 1)
        #expect(hook == [[.refblockAllocWrite, .refblockUpdatePart, .pwritev], [.refblockAllocHookup, .pwritev]])
        #expect(r.write(257 * c, block(r, at: 257, index: 1, setting: [256])).events
                == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(256 * c, [UInt8](repeating: 0, count: Int(c))).events == [.l2AllocWrite, .l2Update, .pwritev])
        r.flush()
        r.write(l1 + 16, be64(cfg | 256 * c))
        r.flush()
        #expect(data(&r, 192) == [.writeAio, .pwritev])
    }

    /// The same crossing as the first test when the L2 cache was clean (chunk 1's data
    /// still in flight): alloc_refcount_block's refcount cache flush writes the new block
    /// first, then block 0; the new block's write is the first I/O of chunk 2's data
    /// allocation (its update of block 0, then block 1's allocation).
    @Test func theNewBlockWrittenFirst() throws {
        var r = try image(refblocks: [2], usedThrough: 188)
        r.open()
        r.read(2 * c, c)
        r.write(2 * c, block(r, at: 2, index: 0, setting: [189]))
        tableAndEntry(&r, table: 189, l1Index: 0)
        r.write(2 * c, block(r, at: 2, index: 0, setting: Array(190...254)))
        tableAndEntry(&r, table: 254, l1Index: 1)
        #expect(r.write(319 * c, block(r, at: 319, index: 1, setting: [319])).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockAllocWrite,
                    .refblockUpdatePart, .pwritev])
        #expect(r.write(2 * c, block(r, at: 2, index: 0, setting: [255])).events == [.refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(c + 8, be64(319 * c)).events == [.refblockAllocHookup, .pwritev])
        r.flush()
        #expect(r.write(319 * c, block(r, at: 319, index: 1, setting: Array(256...318) + [320])).events
                == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                    .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(2 * c, block(r, at: 2, index: 0)).events == [.refblockUpdatePart, .pwritev])
        r.flush()
        #expect(data(&r, 190) == [.writeAio, .pwritev])
        #expect(data(&r, 255) == [.writeAio, .pwritev])
    }

    /// Window 1004: block 1 exists (a refcount table growth made it ahead, refblock at
    /// cluster 35) and is not cached: chunk 1's run crosses into it (its read is the
    /// search's cache miss), so chunk 2's write-back of block 1 raises one update per block
    /// the run spans, and block 0's write-back after it is the same flush.
    @Test func aRunCrossingIntoABlockThatExists() throws {
        var r = try image(refblocks: [2, 35], usedThrough: 229)
        r.open()
        r.read(2 * c, c)
        r.write(2 * c, block(r, at: 2, index: 0, setting: [230]))
        tableAndEntry(&r, table: 230, l1Index: 0)
        #expect(r.read(35 * c, c).events == [.clusterAlloc])
        #expect(r.write(35 * c, block(r, at: 35, index: 1, setting: Array(256...295))).events
                == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                    .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(2 * c, block(r, at: 2, index: 0, setting: Array(231...255))).events
                == [.refblockUpdatePart, .pwritev])
        tableAndEntry(&r, table: 295, l1Index: 1)
        #expect(data(&r, 231) == [.writeAio, .pwritev])
    }

    /// Window 244: chunk 2's run crosses from block 63 into block 64, past the refcount
    /// table's 64 entries: the table grows (new block at 16437, the area's block and the
    /// new table at 16640...16642), the old table (cluster 1) is freed, the new block
    /// loaded, the update undone; the search starts again at cluster 1, reading the blocks
    /// (block 63 and 0 evicted, written back), and the update is redone before chunk 3's
    /// table's write-back.
    @Test func aRunCrossingPastTheRefcountTable() throws {
        let blocks: [UInt64] = [2] + (1..<64).map { UInt64($0) * 256 }
        var r = try image(refblocks: blocks, usedThrough: 16306)
        let rb: UInt64 = 63 * 256
        twoChunks(&r, rb: rb, b: 63, t0: 16307)
        #expect(r.write(rb * c, block(r, at: rb, index: 63, setting: Array(16373...16383))).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(tableWriteBack(&r, table: 16307, run: 16308...16371) == [.l2Update, .pwritev])
        r.flush()
        #expect(r.write(16437 * c, block(r, at: 16437, index: 64, setting: [16437])).events
                == [.refblockAllocWrite, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(16640 * c, block(r, at: 16640, index: 65, setting: [16640, 16641, 16642])).events
                == [.reftableGrow, .refblockAllocWriteBlocks, .refblockUpdatePart, .pwritev])
        r.flush()
        var table = [UInt8]()
        for b in blocks + [16437, 16640] { table += be64(b * c) }
        table += [UInt8](repeating: 0, count: 1024 - table.count)
        #expect(r.write(16641 * c, table).events == [.refblockAllocWriteTable, .pwritev])
        r.flush()
        #expect(r.write(48, be64(16641 * c) + [0, 0, 0, 2]).events == [.refblockAllocSwitchTable, .pwritev])
        r.flush()
        #expect(r.read(2 * c, c).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        #expect(r.read(256 * c, c).events == [.refblockLoad, .refblockAlloc, .refblockLoad])
        #expect(r.write(rb * c, block(r, at: rb, index: 63, clearing: Array(16373...16383))).events
                == [.refblockUpdatePart, .pwritev])
        #expect(r.read(512 * c, c).events == [])
        #expect(r.write(2 * c, block(r, at: 2, index: 0, clearing: [1])).events == [.refblockUpdatePart, .pwritev])
        for k: UInt64 in 3...62 { #expect(r.read(k * 256 * c, c).events == []) }
        #expect(r.read(16437 * c, c).events == [])
        #expect(r.write(16437 * c, block(r, at: 16437, index: 64, setting: Array(16384...16436) + [16438])).events
                == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                    .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(rb * c, block(r, at: rb, index: 63, setting: Array(16373...16383))).events
                == [.refblockUpdatePart, .pwritev])
        tableAndEntry(&r, table: 16438, l1Index: 2)
        #expect(data(&r, 16373) == [.writeAio, .pwritev])
    }
}
