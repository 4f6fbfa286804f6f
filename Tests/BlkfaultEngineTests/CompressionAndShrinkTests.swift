import Testing
import BlkfaultEngine

/// Issue 3's events, replayed as QEMU 7.2's qemu-io / qemu-img did them (strace of
/// `write -c`, `read` of compressed clusters, `qemu-img resize --shrink`). 1 GiB image,
/// 1 KiB clusters: reftable @1024, refblock @2048, L1 @3072, an L2 table @68608.
@Suite struct CompressionAndShrinkTests {
    let cluster: UInt64 = 1024

    /// An image whose L1 entry `l1Index` points at an L2 table @68608 holding `l2`.
    func imageWithL2(_ l2: [UInt8], l1Index: UInt64 = 0, refcounted: [UInt64] = [67]) throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: refcounted))
        setup.file.write(offset: 3072 + 8 * l1Index, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2)
        return try Replay(setup.file)
    }

    @Test func compressedWritesRaiseTheCompressedAllocationEvents() throws {
        var r = try imageWithL2([UInt8](repeating: 0, count: 1024))
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        let compressed: [BlkdebugEvent] = [.clusterAllocBytes, .refblockAlloc, .refblockLoad, .l2UpdateCompressed, .writeCompressed, .pwritev]
        // Two clusters compressed into 79 bytes each, packed into one host cluster.
        #expect(r.write(69632, [UInt8](repeating: 0xed, count: 79)).events == compressed)
        #expect(r.write(69711, [UInt8](repeating: 0xed, count: 79)).events == compressed)
        // A whole-cluster write to new space is plain guest data, not compressed.
        let plain = r.write(70656, [UInt8](repeating: 0xcd, count: 1024)).events
        #expect(plain.contains(.writeAio) && !plain.contains(.writeCompressed))
    }

    /// qemu-io (writethrough) `write -c 0 64k` and `write -c 64k 64k` (--full --sample
    /// 38/40, flush_to_disk on wc): the block layer emulates writethrough with FUA, which
    /// compressed writes skip, so no flush follows them and the node's write generation
    /// moves; the close's full flush raises flush_to_disk before its fdatasync.
    @Test func theCloseAfterCompressedWritesRaisesFlushToDisk() throws {
        var r = try imageWithL2([UInt8](repeating: 0, count: 1024))
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.write(69632, [UInt8](repeating: 0xed, count: 79)).events.last == .pwritev)
        #expect(r.write(69711, [UInt8](repeating: 0xed, count: 79)).events.last == .pwritev)
        // The close: the refblock, then the L2 table written back, then blkdebug's flush.
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 68])).events == [.flushToOS, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<8, with: be64((1 << 62) | 69632))
        l2.replaceSubrange(8..<16, with: be64((1 << 62) | 69711))
        #expect(r.write(68608, l2).events == [.l2Update, .pwritev])
        #expect(r.flush().events == [.flushToDisk])
    }

    /// The same close with a flush_to_disk rule: once=on, blkdebug fails that flush, bdrv_close
    /// ignores the error and qcow2_close flushes again, so nothing shows (the preload performs
    /// the fdatasync: a failed one would latch in file-posix); once=off fails the retry too.
    @Test func aOnceRuleOnTheCloseFlushAfterCompressedWritesIsAbsorbed() throws {
        for once in ["on", "off"] {
            var r = try imageWithL2([UInt8](repeating: 0, count: 1024))
            r = try Replay(r.file, rules: "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\nonce = \"\(once)\"\n")
            r.open()
            r.read(68608, 1024)
            r.write(69632, [UInt8](repeating: 0xed, count: 79))
            r.write(69711, [UInt8](repeating: 0xed, count: 79))
            r.write(2048, r.refblock(2048, settingClusters: [67, 68]))
            r.flush()
            var l2 = [UInt8](repeating: 0, count: 1024)
            l2.replaceSubrange(0..<8, with: be64((1 << 62) | 69632))
            r.write(68608, l2)
            #expect(r.flush().decision == (once == "on" ? .perform : .fail(errno: 5)))
        }
    }

    @Test func readsOfCompressedClustersAndTheirCopyOnWrite() throws {
        // L2 entry 0: compressed, one 512-byte sector at host 69632 (csize shift 60).
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<8, with: be64((1 << 62) | 69632))
        var r = try imageWithL2(l2, refcounted: [67, 68])
        r.file.write(offset: 69632, data: [UInt8](repeating: 0x11, count: 79))
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(69632, 512).events == [.readCompressed])
        // A partial write over it: the COW region and the data go out as one write.
        let cow = r.write(70656, [UInt8](repeating: 0xcd, count: 1024)).events
        #expect(cow.suffix(3) == [.writeAio, .cowWrite, .pwritev])
        // A read of plain data is still read_aio.
        var plainL2 = [UInt8](repeating: 0, count: 1024)
        plainL2.replaceSubrange(0..<8, with: be64((1 << 63) | 69632))
        var p = try imageWithL2(plainL2, refcounted: [67, 68])
        p.open()
        #expect(p.read(68608, 1024).events == [.l2Load])
        #expect(p.read(69632, 1024).events == [.readAio])
    }

    /// qemu-img snapshot -c: the copy of the active L1 table and the rewrite of the whole
    /// active table (COPIED flags cleared) raise no l1_update and no write_aio.
    @Test func snapshotL1CopyAndRewriteRaiseNoTableEvents() throws {
        var r = try imageWithL2([UInt8](repeating: 0, count: 1024))
        r.open()
        var l1 = r.file.read(offset: 3072, count: 65536)!
        let copy = r.write(200704, l1).events
        #expect(!copy.contains(.writeAio) && !copy.contains(.l1Update) && copy.last == .pwritev)
        // The refcount walk over the active table (one update: the empty L2 table's own),
        // ended by its full flush.
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.flush().events == [.refblockAlloc, .refblockLoad, .flushToOS])
        l1.replaceSubrange(0..<8, with: be64(68608))
        #expect(r.write(3072, l1).events == [.pwritev])
        // One entry is still an l1_update.
        #expect(r.write(3072, be64((1 << 63) | 68608)).events == [.l1Update, .pwritev])
    }

    @Test func shrinkZeroesL1EntriesThenFreesTheirTables() throws {
        var r = try imageWithL2([UInt8](repeating: 0, count: 1024), l1Index: 5)
        r.open()
        // qcow2_shrink_l1_table: write-zeroes over the dropped entries 4...7.
        let zero = Operation(.writeZeroes, offset: 3072 + 32, length: 32)
        let step = r.engine.before(zero, file: r.file)
        #expect(step.events == [.l1ShrinkWriteTable, .pwritevZero])
        r.file.write(offset: 3072 + 32, data: [UInt8](repeating: 0, count: 32))
        _ = r.engine.after(zero, succeeded: true, file: r.file)
        // Its flush is qcow2's own: no flush_to_os / flush_to_disk.
        #expect(r.flush().events == [])
        // Then one free per dropped L2 table, before the next I/O.
        let next = r.write(2048, r.refblock(2048, settingClusters: []))
        #expect(Array(next.events.prefix(4)) == [.l1ShrinkFreeL2Clusters, .clusterFree, .refblockAlloc, .refblockLoad])
    }
}
