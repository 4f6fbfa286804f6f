import Testing
import BlkfaultEngine

/// qemu-io `write -c` twice, then the close, replayed from the I/O real blkdebug showed
/// (tools/events_diff.py on `zstdw`; the parity cases flush_to_disk once=off on `zstdw`,
/// found by --full --sample 4/40). qemu-io writes through (BDRV_REQ_FUA), and QEMU
/// emulates FUA with a flush after each write, but not for a compressed write
/// (bdrv_driver_pwritev_compressed): the node's write generation moves with no flush, so
/// the close's flush raises flush_to_disk. blkfault raised it only after a flushed
/// request. 1 KiB clusters: refcount block @2048, an empty L2 table @68608, compressed
/// data packed at 69632.
@Suite struct CompressedWriteFlushTests {
    func compressedWrites(_ r: inout Replay) {
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        let compressed: [BlkdebugEvent] = [.clusterAllocBytes, .refblockAlloc, .refblockLoad, .l2UpdateCompressed, .writeCompressed, .pwritev]
        #expect(r.write(69632, [UInt8](repeating: 0xed, count: 79)).events == compressed)
        #expect(r.write(69711, [UInt8](repeating: 0xed, count: 79)).events == compressed)
    }

    /// The close: refcount block, its dependency sync, the L2 table, the final sync.
    @Test func theClosesFlushRaisesFlushToDisk() throws {
        var r = try CompressionAndShrinkTests().imageWithL2([UInt8](repeating: 0, count: 1024), refcounted: [67])
        compressedWrites(&r)
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 68])).events == [.flushToOS, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2[0] = 0x40; l2[6] = 0x01; l2[7] = 0x10  // a compressed entry (its size bits left 0)
        #expect(r.write(68608, l2).events == [.l2Update, .pwritev])
        #expect(r.flush().events == [.flushToDisk])
    }

    /// The parity case: a flush_to_disk rule fails the close's last fdatasync.
    @Test func aFlushToDiskRuleFailsTheClosesSync() throws {
        var r = try CompressionAndShrinkTests().imageWithL2([UInt8](repeating: 0, count: 1024), refcounted: [67])
        r = try Replay(r.file, rules: "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"28\"\nonce = \"off\"\n")
        compressedWrites(&r)
        r.write(2048, r.refblock(2048, settingClusters: [67, 68]))
        #expect(r.flush().decision == .perform)
        r.write(68608, [UInt8](repeating: 0, count: 1024))
        #expect(r.flush().decision == .fail(errno: 28))
    }

    /// once=on, qemu-io with no flush command: that sync is the close's. blkdebug fails it
    /// above file-posix, bdrv_close ignores the error and qcow2_close flushes again, so
    /// nothing shows; failing the fdatasync would latch in file-posix and fail the retry
    /// ("Failed to flush the L2 table cache"): the sync is performed, the rule consumed.
    @Test func aOnceRuleOnTheClosesSyncIsAbsorbed() throws {
        for noFlushCommand in [true, false] {
            var r = try CompressionAndShrinkTests().imageWithL2([UInt8](repeating: 0, count: 1024), refcounted: [67])
            r = try Replay(r.file, rules: "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\nonce = \"on\"\n")
            r.engine.noteNoFlushCommand(noFlushCommand)
            compressedWrites(&r)
            r.write(2048, r.refblock(2048, settingClusters: [67, 68]))
            r.flush()
            r.write(68608, [UInt8](repeating: 0, count: 1024))
            let close = r.flush()
            #expect(close.decision == (noFlushCommand ? .perform : .fail(errno: 5)))
            #expect(close.absorbed == noFlushCommand)
        }
    }

    @Test func theCommandLineTellsAQemuIoWithoutFlush() {
        #expect(ProgramCommand(arguments: ["qemu-io", "-f", "qcow2", "-c", "write -c 0 64k", "t.qcow2"]).isQemuIoWithoutFlushCommand)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-c", "write -c 0 64k", "-c", "flush", "t"]).isQemuIoWithoutFlushCommand)
        #expect(!ProgramCommand(arguments: ["qemu-io", "--cmd=aio_flush", "t"]).isQemuIoWithoutFlushCommand)
        #expect(!ProgramCommand(arguments: ["qemu-io", "t.qcow2"]).isQemuIoWithoutFlushCommand)
        #expect(!ProgramCommand(arguments: ["qemu-img", "commit", "t.qcow2"]).isQemuIoWithoutFlushCommand)
    }
}
