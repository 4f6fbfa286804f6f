import Testing
import BlkfaultEngine

/// The reference traces of notes §3.4 (strace of QEMU 7.2's qemu-io with event
/// markers), replayed through the engine: each I/O must carry the events QEMU raised
/// before it. 1 GiB image, 1 KiB clusters: reftable @1024, refblock @2048,
/// L1 @3072 (64 KiB), file ends at 68608.
@Suite struct Qcow2ClassifierTests {
    let cluster: UInt64 = 1024

    /// S1: `write 0 128k` on a fresh image.
    @Test func freshWriteOf128KiBMatchesReferenceTraceS1() throws {
        var r = try Replay(freshQcow2())
        r.open()
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67])).events == [.refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(68608, [UInt8](repeating: 0, count: 1024)).events == [.l2AllocWrite, .l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(3072, be64((1 << 63) | 68608)).events == [.l1Update, .pwritev])
        #expect(r.flush().events == [])
        let data = r.write(69632, [UInt8](repeating: 0xcd, count: 131072))
        #expect(data.events == [.clusterAlloc, .refblockAlloc, .refblockLoad, .writeAio, .pwritev])
        #expect(data.eventsAfter == [] || data.eventsAfter == [.pwritevDone])
        let rb = r.write(2048, r.refblock(2048, settingClusters: Array(68...195)))
        #expect(rb.events == [.flushToOS, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        let l2 = r.write(68608, l2Slice(size: 1024, host: 69632, count: 128, cluster: cluster))
        #expect(l2.events == [.l2Update, .pwritev])
        #expect(r.flush().events == [])
    }

    /// S3: rewriting allocated data in a new process: l2_load, write_aio, and the
    /// flush of the first write request carries flush_to_os but not flush_to_disk.
    @Test func rewriteInNewProcessMatchesReferenceTraceS3() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(67...195)))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 128, cluster: cluster))
        setup.file.write(offset: 69632, data: [UInt8](repeating: 1, count: 131072))
        var r = try Replay(setup.file)
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.write(69632, [UInt8](repeating: 2, count: 131072)).events == [.writeAio, .pwritev])
        #expect(r.flush().events == [.flushToOS])
        // A second request in the same process: its flush reaches the disk.
        #expect(r.write(69632, [UInt8](repeating: 3, count: 4096)).events == [.writeAio, .pwritev])
        #expect(r.flush().events == [.flushToOS, .flushToDisk])
        #expect(r.read(69632, 131072).events == [.readAio])
    }

    /// S2: the L2 table maps cluster 0 only; `write 0 128k` extends the host run
    /// (qcow2_alloc_clusters_at): no cluster_alloc.
    @Test func extendingAHostRunRaisesNoClusterAllocS2() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67, 68]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 1, cluster: cluster))
        var r = try Replay(setup.file)
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [])
        #expect(r.write(69632, [UInt8](repeating: 0xcd, count: 131072)).events == [.refblockAlloc, .refblockLoad, .writeAio, .pwritev])
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(69...195))).events == [.flushToOS, .refblockUpdatePart, .pwritev])
    }

    /// blkdebug semantics on top: the seed example fails the new L2 table's write,
    /// and nothing before it.
    @Test func seedRuleFailsTheNewL2TableWrite() throws {
        var r = try Replay(freshQcow2(), rules: "[inject-error]\nevent = \"l2_alloc_write\"\nerrno = \"5\"\nonce = \"on\"\n")
        r.open()
        #expect(r.read(2048, 1024).decision == .perform)
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67])).decision == .perform)
        #expect(r.flush().decision == .perform)
        let l2 = r.write(68608, [UInt8](repeating: 0, count: 1024))
        #expect(l2.decision == .fail(errno: 5))
        #expect(l2.eventsAfter == [.pwritevDone])
        // once = on: the rule is gone.
        #expect(r.flush().decision == .perform)
        #expect(r.write(68608, [UInt8](repeating: 0, count: 1024)).decision == .perform)
    }

    /// cluster_alloc with once=off fails the free-cluster search's refblock read and
    /// every request after it.
    @Test func clusterAllocOnceOffFailsEverythingAfter() throws {
        var r = try Replay(freshQcow2(), rules: "[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"28\"\n")
        r.open()
        #expect(r.read(2048, 1024).decision == .fail(errno: 28))
        #expect(r.read(2048, 1024).decision == .fail(errno: 28))
        #expect(r.flush().decision == .fail(errno: 28))
    }

    /// qemu-img check reads the L1 table a second time and walks the L2 tables
    /// with plain reads that bypass the L2 cache: no l2_load; and a read-only
    /// user never allocates, so its refblock reads raise no cluster_alloc.
    @Test func metadataWalkOfQemuImgCheckRaisesNoCacheEvents() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67, 68]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 1, cluster: cluster))
        var r = try Replay(setup.file)
        var ro = try Replay(setup.file)
        ro.engine = ImageEngine(rules: RuleSet(), file: setup.file)
        ro.engine.noteOpen(writable: false)
        ro.open()
        #expect(ro.read(3072, 65536).events == [])
        #expect(ro.read(68608, 1024).events == [])
        #expect(ro.read(2048, 1024).events == [])
        // The same L2 read in a process that did not walk the metadata is a cache miss.
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
    }

    /// A file that is not qcow2 is followed in raw mode: generic events only.
    @Test func nonQcow2FileGetsGenericEvents() throws {
        var r = try Replay(MemoryImage([UInt8](repeating: 7, count: 4096)))
        #expect(r.engine.modelName == "raw")
        #expect(r.read(0, 512).events == [.none, .readAio])
        #expect(r.write(0, [1, 2, 3]).events == [.writeAio, .pwritev])
    }
}
