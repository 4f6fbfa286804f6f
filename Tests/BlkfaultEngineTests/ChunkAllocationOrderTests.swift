import Testing
import BlkfaultEngine

/// `qemu-io -c 'write 0 1M'` on a fresh 64 MiB image with 1 KiB clusters (parity workload
/// `leak`), replayed from QEMU 7.2's I/O as Tests/parity/tools/events_diff.py recorded it:
/// 8 chunks of 128 KiB, one L2 table each. Chunk k's data allocation has no I/O of its own;
/// its data task starts late, so chunk k+1's l2_allocate writes the refcount block (holding
/// chunk k's data clusters and the new table) before chunk k's data. blkdebug raises chunk
/// k's `cluster_alloc refblock_alloc refblock_load` before that write-back, and only
/// `write_aio` at the data write.
@Suite struct ChunkAllocationOrderTests {
    let cfg: UInt64 = 1 << 63  // QCOW_OFLAG_COPIED

    func image(rules: String = "") throws -> Replay {
        try Replay(freshQcow2(size: 64 << 20, clusterBits: 10), rules: rules)
    }

    /// Chunk 1's l2_allocate: its refcount block read and write-back, its table (cluster 7,
    /// at 7168) and its L1 entry, each followed by its sync. Returns the first two's events.
    @discardableResult
    func firstTable(_ r: inout Replay) -> [[BlkdebugEvent]] {
        r.open()
        let steps = [r.read(2048, 1024).events, r.write(2048, r.refblock(2048, settingClusters: [7])).events]
        tableAndEntry(&r, table: 7168, entry: 3072)
        return steps
    }

    /// The rest of an l2_allocate after its refcount write-back: sync, the zeroed table,
    /// sync, its L1 entry, sync.
    func tableAndEntry(_ r: inout Replay, table: UInt64, entry: UInt64) {
        r.flush()
        r.write(table, [UInt8](repeating: 0, count: 1024))
        r.flush()
        r.write(entry, be64(cfg | table))
        r.flush()
    }

    /// Chunk 1's table, and the write-back of chunk 2's l2_allocate: chunk 1's data
    /// (clusters 8...135) and chunk 2's table (136, at 139264).
    func firstTwoTables(_ r: inout Replay) -> [[BlkdebugEvent]] {
        var steps = firstTable(&r)
        steps.append(r.write(2048, r.refblock(2048, settingClusters: Array(8...136))).events)
        tableAndEntry(&r, table: 139264, entry: 3080)
        return steps
    }

    @Test func theDataAllocationIsRaisedAtTheNextChunksWriteBack() throws {
        var r = try image()
        let steps = firstTwoTables(&r)
        #expect(steps[0] == [.clusterAlloc])
        #expect(steps[1] == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(steps[2] == [.clusterAlloc, .refblockAlloc, .refblockLoad,
                             .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        // Chunk 1's data: its allocation was raised already.
        #expect(r.write(8192, [UInt8](repeating: 0xcd, count: 131072)).events == [.writeAio, .pwritev])
        // Chunk 3's l2_allocate: chunk 2's data (137...264) and chunk 3's table (265).
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(137...265))).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad,
                    .clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
    }

    /// When chunk 1's data write comes before chunk 2's write-back (its task ran at once),
    /// it carries its allocation, and the write-back only the table's.
    @Test func theDataWriteBeforeTheWriteBack() throws {
        var r = try image()
        firstTable(&r)
        #expect(r.write(8192, [UInt8](repeating: 0xcd, count: 131072)).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .writeAio, .pwritev])
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(8...136))).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
    }

    /// The counting chain of the parity harness (chain-leak-cluster_alloc-counts-to-3):
    /// the 3rd cluster_alloc is chunk 1's data allocation, so the write-back of chunk 2's
    /// l2_allocate fails (blkdebug: `qemu-img check` then finds chunk 1's table only),
    /// not chunk 1's data write.
    @Test func aCountingChainFailsTheWriteBack() throws {
        var rules = "[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"5\"\nonce = \"on\"\nstate = \"3\"\n"
        for k in 1..<3 { rules += "[set-state]\nevent = \"cluster_alloc\"\nstate = \"\(k)\"\nnew_state = \"\(k + 1)\"\n" }
        var r = try image(rules: rules)
        firstTable(&r)
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(8...136))).decision == .fail(errno: 5))
    }
}
