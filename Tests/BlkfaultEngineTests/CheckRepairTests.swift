import Testing
import BlkfaultEngine

/// qemu-img check -r (QEMU 7.2, lined up with real blkdebug's events under gdb,
/// Tests/parity/tools/events_diff.py). 1 GiB image, 1 KiB clusters: L2 table @68608
/// (cluster 67), data @69632 (68), and cluster 69 @70656 with refcount 1 that no table
/// references (a leak).
@Suite struct CheckRepairTests {
    func leakingImage() throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67, 68, 69]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: be64((1 << 63) | 69632))
        setup.file.write(offset: 69632, data: [UInt8](repeating: 0xcd, count: 2048))
        return try Replay(setup.file)
    }

    /// The walk: the active L1 table read a second time, the L2 table and the refblock
    /// read with no event (bdrv_pread and qcow2_get_refcount's cache miss).
    func walk(_ r: inout Replay) {
        #expect(r.read(3072, 65536).events == [])
        #expect(r.read(68608, 1024).events == [])
        #expect(r.read(2048, 1024).events == [])
    }

    @Test func aLeakFixRaisesItsRefcountUpdateBeforeTheDiscard() throws {
        var r = try leakingImage()
        r.open()
        walk(&r)
        // compare_refcounts → update_refcount (no cluster_free), then the discard.
        #expect(r.discard(70656, 1024).events == [.refblockAlloc, .refblockLoad])
        // "Double checking the fixed image now...": a walk again.
        walk(&r)
        // The close: flush_to_os, the refcount cache's dependency flush of the L2 cache,
        // the refblock, the file's flush; no flush_to_disk (no write through qcow2).
        #expect(r.flush().events == [.flushToOS])
        var block = r.file.read(offset: 2048, count: 1024)!
        block[69 * 2 + 1] = 0
        #expect(r.write(2048, block).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    /// pwritev_done once=on (--full --sample 38/40, checkleaks): blkdebug fails the file's
    /// flush after the refblock write-back; bdrv_close ignores the error and qcow2_close's
    /// L2 cache flush does the fdatasync again, so nothing shows. Failing the fdatasync
    /// would latch in file-posix: the flush is performed, the rule counted as fired.
    @Test func theFlushAfterTheCloseWriteBackIsRetriedByTheClose() throws {
        var r = try leakingImage()
        r = try Replay(r.file, rules: "[inject-error]\nevent = \"pwritev_done\"\nerrno = \"28\"\nonce = \"on\"\n")
        r.open()
        walk(&r)
        #expect(r.discard(70656, 1024).events == [.refblockAlloc, .refblockLoad])
        walk(&r)
        #expect(r.flush().decision == .perform)
        var block = r.file.read(offset: 2048, count: 1024)!
        block[69 * 2 + 1] = 0
        #expect(r.write(2048, block).decision == .perform)
        #expect(r.flush().decision == .perform)
        // once=on: the rule is spent, nothing later fails.
        #expect(r.read(68608, 1024).decision == .perform)
    }

    @Test func aRebuildWritesItsRefcountStructuresWithNoEvent() throws {
        var r = try leakingImage()
        r.open()
        walk(&r)
        // rebuild_refcount_structure: a new refblock and reftable after the end of the
        // file, the header's reftable fields, the file's flush.
        let end = r.file.size + 2048
        #expect(r.write(end, r.refblock(2048, settingClusters: [70, 71])).events == [.pwritev])
        #expect(r.write(end + 1024, be64(end) + [UInt8](repeating: 0, count: 1016)).events == [.pwritev])
        #expect(r.write(48, be64(end + 1024) + [0, 0, 0, 1]).events == [.pwritev])
        #expect(r.flush().events == [])
    }
}

/// qemu-img amend -o refcount_bits=64 (QEMU 7.2 qcow2_change_refcount_order, lined up
/// with real blkdebug's events): 1 KiB clusters, 16-bit refcounts, 67 clusters in use.
@Suite struct RefcountOrderChangeTests {
    @Test func theRewriteRaisesItsAllocationsFirstAndFreesTheOldStructuresAfterTheSwitch() throws {
        var r = try Replay(freshQcow2())
        r.open()
        // The walk over the old refcount table (undecidable: a free-space search's read).
        r.read(2048, 1024)
        let refblock = r.file.size, reftable = refblock + 1024
        var newBlock = [UInt8](repeating: 0, count: 1024)
        for c in 0..<69 { newBlock[c * 8 + 7] = 1 }
        // One new refblock and the new table allocated (two qcow2_alloc_clusters), then
        // the new refblock written: all the events come before that write.
        #expect(r.write(refblock, newBlock).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .clusterAlloc, .refblockAlloc, .refblockLoad, .pwritev])
        #expect(r.write(reftable, be64(refblock) + [UInt8](repeating: 0, count: 1016)).events == [.pwritev])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 68])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        // The header switch to the new structures (a whole cluster at offset 0).
        var header = r.file.read(offset: 0, count: 1024)!
        header.replaceSubrange(48..<56, with: be64(reftable))
        header.replaceSubrange(96..<100, with: [0, 0, 0, 6])
        #expect(r.write(0, header).events == [.pwritev])
        // The old table's and the old refblock's frees: the first misses the new cache.
        #expect(r.read(refblock, 1024).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        #expect(r.write(0, header).events == [.clusterFree, .refblockAlloc, .refblockLoad, .pwritev])
        // The close, as after a check repair: no flush_to_disk.
        #expect(r.flush().events == [.flushToOS])
        #expect(r.write(refblock, newBlock).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }
}

extension RefcountOrderChangeTests {
    /// Guest data filled with ones (`write -P 1`) starts like an 8-bit refblock; a refblock
    /// has no refcounts past the file's end, the data has.
    @Test func guestDataOfOnesIsNoNewRefblock() throws {
        var r = try Replay(freshQcow2())
        r.open()
        #expect(r.read(3072, 1024).events == [])
        let events = r.write(r.file.size, [UInt8](repeating: 1, count: 1024)).events
        #expect(events.contains(.writeAio))
    }
}

/// The close's dependency flush under a `flush_to_os` rule: blkdebug fails it above
/// file-posix, bdrv_close ignores the error and qcow2_close flushes again, so with `once`
/// nothing shows. Failing the fdatasync would latch in file-posix: blkfault performs it.
extension CheckRepairTests {
    func closeAfterLeakFix(rules: String) throws -> (Replay, Step) {
        var r = try Replay(try leakingImage().file, rules: rules)
        r.open()
        walk(&r)
        r.discard(70656, 1024)
        walk(&r)
        return (r, r.flush())
    }

    @Test func aOnceRuleOnTheClosesDependencyFlushIsAbsorbed() throws {
        let (_, step) = try closeAfterLeakFix(rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"on\"\n")
        #expect(step.events == [.flushToOS])
        #expect(step.decision == .perform)
        #expect(step.absorbed)
    }

    @Test func withOnceOffTheClosesDependencyFlushFails() throws {
        let (_, step) = try closeAfterLeakFix(rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"off\"\n")
        #expect(step.decision == .fail(errno: 5))
        #expect(!step.absorbed)
    }

    @Test func aOnceRuleOnAGuestRequestsFlushStillFails() throws {
        // A plain write session's flush (no check walk): not a close QEMU retries.
        var r = try Replay(freshQcow2(), rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"on\"\n")
        r.open()
        r.read(3072, 1024)
        r.write(r.file.size, [UInt8](repeating: 0xcd, count: 1024))
        var failed = false
        for _ in 0..<3 where !failed { failed = r.flush().decision == .fail(errno: 5) }
        #expect(failed)
    }
}

/// qcow2_update_header (qemu-img amend, rebase -u) writes the whole header cluster with
/// no flush of its own: the flush right after it is the close's flush of the qcow2 node.
@Suite struct HeaderRewriteCloseTests {
    let onceRule = "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"on\"\n"

    @Test func theFlushAfterAHeaderRewriteIsTheClosesAndAOnceRuleIsAbsorbed() throws {
        var r = try Replay(freshQcow2(), rules: onceRule)
        r.open()
        let header = r.file.read(offset: 0, count: 1024)!
        #expect(r.write(0, header).events == [.pwritev])
        let close = r.flush()
        #expect(close.events == [.flushToOS])
        #expect(close.decision == .perform && close.absorbed)
    }

    @Test func aFlushAfterOtherWritesIsNot() throws {
        var r = try Replay(freshQcow2())
        r.open()
        let header = r.file.read(offset: 0, count: 1024)!
        r.write(0, header)
        r.read(2048, 1024)
        #expect(r.flush().events == [])
    }
}

/// A read-write open of an image marked dirty (lazy_refcounts, incompatible bit 0): QEMU
/// 7.2's qcow2_do_open runs the check with fixes, then qcow2_mark_clean, before the
/// program's first request (lined up with real blkdebug's events under gdb, parity
/// workload lazydirty).
@Suite struct DirtyImageRepairTests {
    @Test func theOpenTimeRepairEndsAtTheHeaderRewriteAndRaisesNoFlushToOS() throws {
        var setup = try CheckRepairTests().leakingImage()
        setup.file.write(offset: 72, data: be64(1))
        var r = try Replay(setup.file)
        r.open()
        CheckRepairTests().walk(&r)
        #expect(r.discard(70656, 1024).events == [.refblockAlloc, .refblockLoad])
        CheckRepairTests().walk(&r)
        // qcow2_mark_clean: the caches' flush goes to the file node (no flush_to_os), the
        // refblock's write-back, the file's flush, the header rewritten at offset 0.
        #expect(r.flush().events == [])
        var block = r.file.read(offset: 2048, count: 1024)!
        block[69 * 2 + 1] = 0
        #expect(r.write(2048, block).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        var header = r.file.read(offset: 0, count: 1024)!
        header.replaceSubrange(72..<80, with: be64(0))
        #expect(r.write(0, header).events == [.pwritev])
        // The program's own write comes next and is classified as usual.
        #expect(r.write(r.file.size, [UInt8](repeating: 0xab, count: 1024)).events.contains(.writeAio))
    }

    @Test func aCleanImageKeepsTheCheckClose() throws {
        var r = try CheckRepairTests().leakingImage()
        r.open()
        CheckRepairTests().walk(&r)
        #expect(r.discard(70656, 1024).events == [.refblockAlloc, .refblockLoad])
        #expect(r.flush().events == [.flushToOS])
    }
}

/// lazy_refcounts (QEMU 7.2, lined up with real blkdebug's events, parity workload lazy):
/// the first allocating write marks the image dirty with bdrv_pwrite_sync, whose flush is
/// no request's; the writethrough flush leaves the refcount cache alone; the close writes
/// it back after a flush that found nothing to write.
@Suite struct LazyRefcountsTests {
    @Test func theDirtyMarksFlushIsNotTheRequestsAndTheCloseWritesTheRefcountsBack() throws {
        var r = try Replay(freshQcow2())
        r.open()
        let data = r.file.size
        #expect(r.write(data, [UInt8](repeating: 0xab, count: 1024)).events.contains(.writeAio))
        #expect(r.write(72, be64(1)).events == [.pwritev])
        #expect(r.flush().events == [])  // bdrv_pwrite_sync's own flush
        #expect(r.flush().events == [.flushToOS])  // the request's: refcounts stay cached
        // The close: its flush finds nothing to write, then the refcount block goes out.
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67])).events
                == [.flushToOS, .flushToDisk, .refblockUpdatePart, .pwritev])
    }
}
