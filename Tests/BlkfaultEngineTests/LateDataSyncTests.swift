import Testing
import BlkfaultEngine

/// iotest 026's refgrow (`write 0 64M`, 512-byte clusters: one 32 KiB chunk per L2 table)
/// under load, replayed in the order a failing run's BLKFAULT_TRACE recorded (two CPU hogs,
/// `flush_to_disk` once=on immediately=on; 1 run in 2 to 8 failed):
///
///     write 50493952 512    the next chunk's l2_allocate: its refcount cache flush
///     flush                 its sync (owed)
///     write 50461184 32768  an earlier chunk's data write, its worker thread late
///     flush                 <- taken for the request's flush: flush_to_os, and one
///                              completed request, so flush_to_disk at the close
///     write 50427392 512    the L2 cache flush: the new table, the linked one
///     write 50527744 512
///     flush
///     write 13568 8         the L1 entry
///
/// The data write's link set the L2 cache's dependency on the refcount cache, and the L2
/// cache flush flushes that first: nothing to write, and bdrv_flush of the file syncs only
/// because the data write came since the last sync. No event (it flushes the file, not the
/// qcow2 node), no request's end: l2_allocate has not written its table yet.
/// Here the same order at the image's start: chunk 0's table at cluster 517, its data at
/// 518...581, chunk 1's table at 582.
@Suite struct LateDataSyncTests {
    let alloc = RefblockAllocationTests()

    /// Chunk 0 allocated and its data task submitted, then chunk 1's l2_allocate writes
    /// the refcounts of both (518...582), syncs, and only then chunk 0's data write comes
    /// and completes, followed by the dependency sync.
    func lateDataThenSync(_ r: inout Replay) -> (data: Step, sync: Step) {
        r.open()
        r.read(264192, 512)
        r.write(264192, alloc.refblock(512, Array(0...5)))                    // 512...517
        r.flush()
        r.write(264704, [UInt8](repeating: 0, count: 512))                    // L2 table @517
        r.flush()
        r.write(1536, be64((1 << 63) | 264704))                               // L1[0]
        r.flush()
        r.write(264192, alloc.refblock(512, Array(0...70)))                   // chunk 1's l2_allocate
        r.flush()
        let data = r.write(265216, [UInt8](repeating: 0xcd, count: 32768))    // chunk 0's data, late
        return (data, r.flush())
    }

    /// The rest of chunk 1's l2_allocate, its data, and the request's full flush.
    func finishRequest(_ r: inout Replay) -> (tableWrite: Step, close: Step) {
        let table = r.write(297984, [UInt8](repeating: 0, count: 512))        // new L2 table @582
        r.write(264704, l2Slice(size: 512, host: 265216, count: 64, cluster: 512))
        r.flush()
        r.write(1544, be64((1 << 63) | 297984))                               // L1[1]
        r.flush()
        r.write(298496, [UInt8](repeating: 0xce, count: 32768))               // chunk 1's data
        // The full flush: flush_to_os, the refcount cache (the L2 cache's dependency), its
        // sync, the L2 table, then the final sync; flush_to_disk only from a second request.
        let start = r.write(264192, alloc.refblock(512, Array(0...134)))
        #expect(start.events.first == .flushToOS)
        r.flush()
        r.write(297984, l2Slice(size: 512, host: 298496, count: 64, cluster: 512))
        return (table, r.flush())
    }

    @Test func theDependencySyncIsNoRequestEnd() throws {
        var r = try Replay(alloc.fresh512())
        let (data, sync) = lateDataThenSync(&r)
        #expect(data.events.contains(.writeAio))
        #expect(sync.events == [])
        let (table, close) = finishRequest(&r)
        #expect(table.events.contains(.l2AllocWrite))
        #expect(close.events == [])
    }

    /// flush_to_os once=on immediately=on (the parity case): nothing fails mid-request.
    @Test func aFlushToOSRuleWaitsForTheRequestsFlush() throws {
        var r = try Replay(alloc.fresh512(), rules: inject("flush_to_os"))
        let (_, sync) = lateDataThenSync(&r)
        #expect(sync.decision == .perform)
        #expect(r.write(297984, [UInt8](repeating: 0, count: 512)).decision == .perform)
    }

    /// flush_to_disk once=on immediately=on: the one request's flush raises no flush_to_disk
    /// (the node's write generation moves only after it), so nothing fails at all.
    @Test func aFlushToDiskRuleNeverFires() throws {
        var r = try Replay(alloc.fresh512(), rules: inject("flush_to_disk"))
        let (_, sync) = lateDataThenSync(&r)
        #expect(sync.decision == .perform)
        let (_, close) = finishRequest(&r)
        #expect(close.decision == .perform)
    }

    func inject(_ event: String) -> String {
        "[inject-error]\nevent = \"\(event)\"\nerrno = \"5\"\nonce = \"on\"\nimmediately = \"on\"\n"
    }

    /// The other syncs an allocation takes at once, each right after its write: the new
    /// refcount block's (its refcount cache flush) and the hookup's (bdrv_pwrite_sync).
    /// Replayed on `leak` (1 KiB clusters, RefblockAllocationTests): a data write of clusters
    /// whose refcounts went out already finishes between each write and its sync.
    @Test func aLateDataWriteBeforeANewBlocksOrAHookupsSyncIsNoRequestEnd() throws {
        var r = try Replay(freshQcow2(size: 64 << 20), rules: inject("flush_to_os"))
        _ = alloc.fillBlockZero(&r, withGuestWrite: true)
        #expect(r.flush().decision == .perform)
        #expect(r.write(535552, alloc.refblock(1024, [11])).events.contains(.refblockAllocWrite))
        #expect(r.write(140288, [UInt8](repeating: 0xce, count: 131072)).decision == .perform)
        let blockSync = r.flush()
        #expect(blockSync.events == [] && blockSync.decision == .perform)
        #expect(r.write(1032, be64(535552)).events == [.refblockAllocHookup, .pwritev])
        #expect(r.write(271360, [UInt8](repeating: 0xcf, count: 131072)).decision == .perform)
        let hookupSync = r.flush()
        #expect(hookupSync.events == [] && hookupSync.decision == .perform)
    }
}
