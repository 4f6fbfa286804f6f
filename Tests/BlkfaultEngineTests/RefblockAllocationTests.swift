import Testing
import BlkfaultEngine

/// A new refcount block mid-allocation (alloc_refcount_block), replayed from QEMU 7.2's
/// I/O as Tests/parity/tools/blkdebug_events.py recorded it under real blkdebug, with
/// the events blkdebug raised before each I/O.
@Suite struct RefblockAllocationTests {
    /// A 16-bit refcount block with the refcounts of `clusters` (indices within the block) at 1.
    func refblock(_ size: Int, _ clusters: [Int]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        for c in clusters { b[c * 2 + 1] = 1 }
        return b
    }

    /// `qemu-img create -f qcow2 -o cluster_size=512 IMG 1G`: reftable @512, refblocks
    /// @1024, @263680 and @264192 (256 clusters each), L1 @1536 (512 clusters); 517
    /// clusters in use.
    func fresh512() -> MemoryImage {
        var image = MemoryImage([UInt8](repeating: 0, count: 517 * 512))
        func put(_ bytes: [UInt8], _ at: Int) { image.bytes.replaceSubrange(at..<at + bytes.count, with: bytes) }
        func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> UInt32(24 - 8 * $0)) & 0xff) } }
        put(be32(0x5146_49fb), 0); put(be32(3), 4); put(be32(9), 20); put(be64(1 << 30), 24)
        put(be32(32768), 36); put(be64(1536), 40); put(be64(512), 48); put(be32(1), 56)
        put(be32(4), 96); put(be32(112), 100)
        put(be64(1024) + be64(263680) + be64(264192), 512)
        put(refblock(512, Array(0..<256)), 1024)
        put(refblock(512, Array(0..<256)), 263680)
        put(refblock(512, Array(0..<5)), 264192)
        return image
    }

    /// qemu-io `write -b 0 32k` (iotest 026's refgrowb): the L1 growth allocates 768
    /// clusters from 517, past the last refcount block. The block for them is
    /// self-describing: its flush writes the old block first, after refblock_alloc_write.
    func l1GrowthUpToTheHookup(_ r: inout Replay) -> [Step] {
        r.open()
        var steps = [r.read(1024, 512), r.read(263680, 512), r.read(264192, 512)]
        steps.append(r.write(264192, refblock(512, Array(0..<256))))      // 512..767 set
        steps.append(r.write(658432, refblock(512, [6])))                 // new block @1286 (index 5)
        steps.append(r.flush())
        steps.append(r.write(552, be64(658432)))                          // hookup, index 5
        steps.append(r.flush())
        return steps
    }

    @Test func l1GrowthRaisesRefblockAllocWriteBeforeTheOldBlocksWriteBack() throws {
        var r = try Replay(fresh512())
        let s = l1GrowthUpToTheHookup(&r)
        #expect(s[3].events == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockAllocWrite, .refblockUpdatePart, .pwritev])
        #expect(s[4].events == [.refblockUpdatePart, .pwritev])
        #expect(s[6].events == [.refblockAllocHookup, .pwritev])
        // The retry: the first round's blocks again (no full flush), then the block for
        // index 3 placed in index 5's range (1285): all zeros, written alone.
        let again = r.write(264192, refblock(512, Array(0..<256)))
        #expect(!again.events.contains(.flushToOS) && again.events.first == .refblockAlloc)
        #expect(r.write(658432, refblock(512, [5, 6])).events.last == .pwritev)
        #expect(r.flush().events == [])
        #expect(r.write(657920, [UInt8](repeating: 0, count: 512)).events == [.refblockAllocWrite, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(536, be64(657920)).events == [.refblockAllocHookup, .pwritev])
    }

    /// What the refgrowb parity cases check: with once=off, blkdebug fails the old
    /// block's write-back and everything after it, and not the reads before.
    @Test func refblockAllocWriteOnceOffFailsTheOldBlocksWriteBack() throws {
        var r = try Replay(fresh512(), rules: "[inject-error]\nevent = \"refblock_alloc_write\"\nerrno = \"5\"\nonce = \"off\"\n")
        r.open()
        #expect(r.read(1024, 512).decision == .perform)
        #expect(r.read(264192, 512).decision == .perform)
        #expect(r.write(264192, refblock(512, Array(0..<256))).decision == .fail(errno: 5))
        #expect(r.write(658432, refblock(512, [6])).decision == .fail(errno: 5))
    }

    /// iotest 026's `leak` workload (1 KiB clusters, 64 MiB): a guest write's chunks fill
    /// refcount block 0; `clean` leaves out the guest data write, so no L2 entry is dirty.
    func fillBlockZero(_ r: inout Replay, withGuestWrite: Bool) -> Step {
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        r.write(2048, refblock(1024, Array(0...7)))                       // the L2 table at 7
        r.flush()
        r.write(7168, [UInt8](repeating: 0, count: 1024))
        r.flush()
        r.write(3072, be64((1 << 63) | 7168))
        r.flush()
        if withGuestWrite { r.write(8192, [UInt8](repeating: 0xcd, count: 131072)) }  // clusters 8...135
        return r.write(2048, refblock(1024, Array(0...511)))              // up to the block's end
    }

    /// L2 entries a guest write linked make alloc_refcount_block's L2 cache flush write
    /// the refcount cache first (its dependency): the old block goes out there, and the
    /// new block alone after refblock_alloc_write. Then the retry after the hookup.
    @Test func dirtyL2EntriesLeaveRefblockAllocWriteAtTheNewBlock() throws {
        var r = try Replay(freshQcow2(size: 64 << 20))
        let old = fillBlockZero(&r, withGuestWrite: true)
        #expect(!old.events.contains(.refblockAllocWrite))
        #expect(r.flush().events == [])
        #expect(r.write(535552, refblock(1024, [11])).events == [.refblockAllocWrite, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(1032, be64(535552)).events == [.refblockAllocHookup, .pwritev])
        #expect(r.flush().events == [])
        // EAGAIN: the allocation undoes its update of block 0 and redoes blocks 0 and 1;
        // the next allocation's flush writes block 0 again: not a full flush.
        let retry = r.write(2048, refblock(1024, Array(0...511)))
        #expect(retry.events == [.refblockAlloc, .refblockLoad, .refblockAlloc, .refblockLoad,
                                 .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
    }

    @Test func cleanL2CacheMovesRefblockAllocWriteToTheOldBlock() throws {
        var r = try Replay(freshQcow2(size: 64 << 20))
        #expect(fillBlockZero(&r, withGuestWrite: false).events.contains(.refblockAllocWrite))
        #expect(r.write(535552, refblock(1024, [11])).events == [.refblockUpdatePart, .pwritev])
    }

    /// What the leak parity cases check: flush_to_os once=off must not fire at the
    /// retried allocation's write-back of block 0 after the hookup.
    @Test func retryAfterTheHookupIsNoFullFlush() throws {
        var r = try Replay(freshQcow2(size: 64 << 20), rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"off\"\n")
        #expect(fillBlockZero(&r, withGuestWrite: true).decision == .perform)
        r.flush()
        r.write(535552, refblock(1024, [11]))
        r.flush()
        #expect(r.write(1032, be64(535552)).decision == .perform)
        r.flush()
        #expect(r.write(2048, refblock(1024, Array(0...511))).decision == .perform)
        #expect(r.write(535552, refblock(1024, [0, 1, 11, 12])).decision == .perform)
    }

    /// The chunk's data write is performed, then an fdatasync comes, and only then does
    /// the write complete (its worker thread ran late).
    func dataWriteFinishingAfterAnAllocationSync(_ r: inout Replay) {
        upToSecondL2Allocation(&r)
        let data = Operation(.write, offset: 140288, data: [UInt8](repeating: 0xce, count: 131072))
        #expect(r.engine.before(data, file: r.file).decision == .perform)
        r.file.write(offset: 140288, data: [UInt8](repeating: 0xce, count: 131072))
        #expect(r.flush().decision == .perform)
        _ = r.engine.after(data, succeeded: true, file: r.file)
    }

    /// `leak`'s first allocation: its refcount block, its L2 table at 7168 and the L1 entry.
    func upToFirstL2Table(_ r: inout Replay) {
        r.open()
        r.read(2048, 1024)
        r.write(2048, refblock(1024, Array(0...7)))
        r.flush()
        r.write(7168, [UInt8](repeating: 0, count: 1024))
        r.flush()
        r.write(3072, be64((1 << 63) | 7168))
        r.flush()
    }

    /// Up to chunk 1's l2_allocate refcount write-back on `leak` (the L2 table at 136),
    /// with chunk 0's data written.
    func upToSecondL2Allocation(_ r: inout Replay) {
        upToFirstL2Table(&r)
        r.write(8192, [UInt8](repeating: 0xcd, count: 131072))
        #expect(!r.write(2048, refblock(1024, Array(0...136))).events.contains(.flushToOS))
    }

    static let flushToOSOnce = "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"on\"\n"

    /// A data write whose worker thread ran late reaches the file after the next
    /// chunk's l2_allocate wrote its refcounts (recorded on `leak`): its completion does
    /// not end the request, and the fdatasync that follows is l2_allocate's.
    @Test func lateDataWriteDoesNotMakeTheAllocationsSyncAFullFlush() throws {
        var r = try Replay(freshQcow2(size: 64 << 20), rules: Self.flushToOSOnce)
        upToSecondL2Allocation(&r)
        #expect(r.write(140288, [UInt8](repeating: 0xce, count: 131072)).decision == .perform)
        let sync = r.flush()
        #expect(sync.events == [] && sync.decision == .perform)
        #expect(r.write(139264, [UInt8](repeating: 0, count: 1024)).decision == .perform)
    }

    /// The same data write finishing during that fdatasync: QEMU syncs again right
    /// after it (the write generation moved), still l2_allocate's flush.
    @Test func secondSyncRightAfterTheAllocationsIsNoFullFlush() throws {
        var r = try Replay(freshQcow2(size: 64 << 20), rules: Self.flushToOSOnce)
        dataWriteFinishingAfterAnAllocationSync(&r)
        let second = r.flush()
        #expect(second.events == [] && second.decision == .perform)
        #expect(r.write(139264, [UInt8](repeating: 0, count: 1024)).decision == .perform)
    }

    /// The same data write finishing only after that fdatasync (recorded on `leak` with two
    /// CPU hogs, 1 run in 20): l2_allocate writes the new L2 table and syncs again, and that
    /// fdatasync is still its own (the L1 entry comes next), not the request's full flush.
    @Test func dataWriteFinishingAfterTheAllocationsSyncIsNoRequestEnd() throws {
        var r = try Replay(freshQcow2(size: 64 << 20), rules: Self.flushToOSOnce)
        dataWriteFinishingAfterAnAllocationSync(&r)
        let table = r.write(139264, [UInt8](repeating: 0, count: 1024))
        #expect(table.decision == .perform && table.events.contains(.l2AllocWrite))
        let sync = r.flush()
        #expect(sync.events == [] && sync.decision == .perform)
        #expect(r.write(3080, be64((1 << 63) | 139264)).events == [.l1Update, .pwritev])
    }

    /// `dnone` (qemu-io -t none, which writes back): chunk 0's data write reaches the file
    /// after a refcount write-back that already counts its clusters, so an L2 write-back
    /// between looks like l2_allocate's L2 cache flush, and no L1 write follows to end
    /// that. Its sync does: the close's L2 write-back is the full flush's, which then ends
    /// with flush_to_disk, as blkdebug raises it.
    @Test func lateDataAfterAnL2WriteBackLeavesTheClosesFlushWhole() throws {
        var r = try Replay(freshQcow2(size: 64 << 20))
        r.engine.noteCommand(ProgramCommand(arguments: ["qemu-io", "-t", "none", "-c", "write 0 128k", "t.qcow2"]))
        upToFirstL2Table(&r)
        r.write(2048, refblock(1024, Array(0...135)))                   // chunk 0's refcounts first
        r.flush()
        #expect(r.write(7168, [UInt8](repeating: 0, count: 1024)).events.contains(.l2AllocWrite))
        r.flush()
        r.write(8192, [UInt8](repeating: 0xcd, count: 131072))         // its data, late
        // The close: flush_to_os at the refcount write-back, then the L2 table, then the sync.
        #expect(r.write(2048, refblock(1024, Array(0...135))).events.first == .flushToOS)
        r.write(7168, l2Slice(size: 1024, host: 8192, count: 128, cluster: 1024))
        #expect(r.flush().events == [.flushToDisk])
    }
}

/// dnone (qemu-io -t none, writeback): with L2 entries dirty, alloc_refcount_block's L2
/// cache flush writes block 0 first (its dependency), syncs, then writes the dirty L2
/// tables back. blkdebug (blkdebug_events.py on dnone) raises refblock_alloc twice before
/// block 0 (the allocation's, then alloc_refcount_block's) and only l2_update before the
/// table: the allocation's clusters whose refcounts went out are data, not a new table,
/// and no l2_alloc_write is raised there.
extension RefblockAllocationTests {
    @Test func theL2FlushBeforeANewBlockWritesNoNewTable() throws {
        var r = try Replay(freshQcow2(size: 64 << 20))
        r.engine.noteCommand(ProgramCommand(arguments: ["qemu-io", "-t", "none", "-c", "write 0 1M", "t.qcow2"]))
        let old = fillBlockZero(&r, withGuestWrite: true)
        #expect(old.events.filter { $0 == .refblockAlloc }.count == 2 && !old.events.contains(.refblockAllocWrite))
        #expect(r.flush().events == [])
        #expect(r.write(7168, l2Slice(size: 1024, host: 8192, count: 128, cluster: 1024)).events == [.l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(535552, refblock(1024, [11])).events == [.refblockAllocWrite, .refblockUpdatePart, .pwritev])
    }
}
