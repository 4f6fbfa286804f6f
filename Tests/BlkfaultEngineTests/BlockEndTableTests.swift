import Testing
import BlkfaultEngine

/// An L2 table allocated in a refcount block's last cluster: l2_allocate's allocation
/// ends there, so its refcount write-back is no alloc_refcount_block flush; the next
/// allocation needs the new block. Replayed from QEMU 7.2's I/O as
/// Tests/parity/tools/events_diff.py recorded it under real blkdebug (1 KiB clusters,
/// 16-bit refcounts: block 0 covers clusters 0...511), with blkdebug's events per I/O.
@Suite struct BlockEndTableTests {
    static let zeroTable = [UInt8](repeating: 0, count: 1024)
    /// An L2 table whose 128 entries all carry the zero flag (a zeroed range).
    static let zeroFlagTable: [UInt8] = (0..<1024).map { $0 % 8 == 7 ? 1 : 0 }

    /// `qemu-img convert -n` of 128 KiB of data into a 1 GiB image (the parity harness's
    /// `convert`): the data's table at 67 and its clusters 68...195, then the zero writes
    /// allocate a table per 128 KiB, back to back (cache=unsafe: no fdatasync). Each
    /// table's step: its refcount, the previous table (zero flags, l2_allocate's L2 cache
    /// flush), the new table, its L1 entry. Returns each table's steps from 196 on.
    static func convertUpTo(_ lastTable: UInt64, _ r: inout Replay) -> [UInt64: [Step]] {
        r.engine.noteCommand(ProgramCommand(arguments: ["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "qcow2", "src.qcow2", "t.qcow2"]))
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(0...67))).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(68608, zeroTable).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.write(3072, be64((1 << 63) | 68608)).events == [.l1Update, .pwritev])
        #expect(r.write(69632, [UInt8](repeating: 3, count: 131072)).events == [.clusterAlloc, .refblockAlloc, .refblockLoad, .writeAio, .pwritev])
        var steps: [UInt64: [Step]] = [:]
        var previous: (offset: UInt64, content: [UInt8]) = (68608, l2Slice(size: 1024, host: 69632, count: 128, cluster: 1024))
        for t in UInt64(196)...lastTable {
            var s = [r.write(2048, r.refblock(2048, settingClusters: t == 196 ? Array(68...196) : [t]))]
            s.append(r.write(previous.offset, previous.content))
            s.append(r.write(t * 1024, zeroTable))
            s.append(r.write(3072 + 8 * (t - 195), be64((1 << 63) | (t * 1024))))
            steps[t] = s
            previous = (t * 1024, zeroFlagTable)
        }
        return steps
    }

    static let tableStep: [[BlkdebugEvent]] = [[.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev],
                                               [.l2AllocWrite, .l2Update, .pwritev], [.l2Update, .pwritev], [.l1Update, .pwritev]]

    @Test func convertsTableInTheLastClusterIsAnOrdinaryTable() throws {
        var r = try Replay(freshQcow2())
        let steps = Self.convertUpTo(511, &r)
        for t in [UInt64(196), 300, 510, 511] {
            #expect(steps[t]!.map(\.events) == Self.tableStep, "table \(t)")
        }
        // Table 512 needs block 1: alloc_refcount_block's L2 cache flush writes table 511
        // (zero flags), then the self-describing block at 513, the hookup, and the retry
        // places the table at 512.
        #expect(r.write(523264, Self.zeroFlagTable).events == [.clusterAlloc, .refblockAlloc, .l2Update, .pwritev])
        var block = [UInt8](repeating: 0, count: 1024)
        block[3] = 1
        #expect(r.write(525312, block).events == [.refblockAllocWrite, .refblockUpdatePart, .pwritev])
        #expect(r.write(1032, be64(525312)).events == [.refblockAllocHookup, .pwritev])
        block[1] = 1
        #expect(r.write(525312, block).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.write(524288, Self.zeroTable).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.write(3072 + 8 * 317, be64((1 << 63) | 524288)).events == [.l1Update, .pwritev])
    }

    /// What the `convert`/`convboth` parity cases check: blkdebug fails the new block's
    /// write, after table 511, its L1 entry and the L2 cache flush went out.
    @Test func refblockAllocWriteFailsTheNewBlockNotTheLastTable() throws {
        var r = try Replay(freshQcow2(), rules: "[inject-error]\nevent = \"refblock_alloc_write\"\nerrno = \"28\"\nonce = \"on\"\n")
        let steps = Self.convertUpTo(511, &r)
        #expect(steps.values.allSatisfy { $0.allSatisfy { $0.decision == .perform } })
        #expect(r.write(523264, Self.zeroFlagTable).decision == .perform)
        var block = [UInt8](repeating: 0, count: 1024)
        block[3] = 1
        #expect(r.write(525312, block).decision == .fail(errno: 28))
    }

    /// qemu-io (writethrough) `write 512k 4k` after writes that leave cluster 511 the
    /// first free one: the table goes there, its allocation ends with the block, and the
    /// data allocation that follows lands wholly past it: the new block (at 516, after
    /// the data's 512...515) is its first I/O, both caches being clean.
    @Test func dataAfterATableInTheLastClusterStartsTheNewBlock() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(0...510)))
        var r = try Replay(setup.file)
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [511])).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(523264, Self.zeroTable).events == [.l2AllocWrite, .l2Update, .pwritev])
        r.flush()
        #expect(r.write(3072 + 8 * 4, be64((1 << 63) | 523264)).events == [.l1Update, .pwritev])
        r.flush()
        var block = [UInt8](repeating: 0, count: 1024)
        block[9] = 1
        #expect(r.write(528384, block).events == [.clusterAlloc, .refblockAlloc, .refblockAllocWrite, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(1032, be64(528384)).events == [.refblockAllocHookup, .pwritev])
        r.flush()
        #expect(r.write(524288, [UInt8](repeating: 0xcd, count: 4096)).events == [.refblockAlloc, .refblockLoad, .writeAio, .pwritev])
    }

    /// The same five writes with `write 384k 55k`: the table takes cluster 510 and the
    /// data allocation 511...514 runs on into block 1 (flushed early because it crosses,
    /// right after the table's L1 entry). After the hookup the retry undoes its update of
    /// block 0 and redoes both blocks before the data write; the undo made the refcount
    /// cache depend on the L2 cache, so linking the data syncs first, with no event.
    @Test func dataRunningOnFromTheLastClusterIsRetriedWithItsUndo() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(0...509)))
        var r = try Replay(setup.file)
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [510])).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(522240, Self.zeroTable).events == [.l2AllocWrite, .l2Update, .pwritev])
        r.flush()
        #expect(r.write(3072 + 8 * 4, be64((1 << 63) | 522240)).events == [.l1Update, .pwritev])
        r.flush()
        #expect(r.write(2048, r.refblock(2048, settingClusters: [511])).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .refblockAlloc, .refblockAllocWrite, .refblockUpdatePart, .pwritev])
        var block = [UInt8](repeating: 0, count: 1024)
        block[7] = 1                                                     // the block at 515
        #expect(r.write(527360, block).events == [.refblockUpdatePart, .pwritev])
        r.flush()
        #expect(r.write(1032, be64(527360)).events == [.refblockAllocHookup, .pwritev])
        r.flush()
        let pair: [BlkdebugEvent] = [.refblockAlloc, .refblockLoad]
        #expect(r.write(523264, [UInt8](repeating: 0xcd, count: 4096)).events == pair + pair + pair + [.writeAio, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(2048, r.file.read(offset: 2048, count: 1024)!).events == [.flushToOS, .refblockUpdatePart, .pwritev])
        for k in [1, 3, 5] { block[k] = 1 }                              // 512...514
        #expect(r.write(527360, block).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(522240, l2Slice(size: 1024, host: 523264, count: 4, cluster: 1024)).events == [.l2Update, .pwritev])
        // (This process's first write request: no flush_to_disk yet, FullFlush.)
        #expect(r.flush().events == [])
    }
}
