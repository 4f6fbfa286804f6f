import Testing
import BlkfaultEngine

/// A partial write over a compressed cluster in a new process (zstdcow, cowc: `write 512
/// 512` after `write -c 0 64k`), replayed from QEMU 7.2's I/O as
/// Tests/parity/tools/events_diff.py recorded it under real blkdebug: after the COW's one
/// data write, linking the new cluster frees the compressed one (cluster_free), whose
/// update_refcount first flushes the refcount cache (the L2 cache's dependency) with an
/// fdatasync of its own; the free's refcount update and the request's full flush follow.
/// 1 KiB clusters here: compressed data @69632, the new cluster @70656.
@Suite struct CompressedCowFreeTests {
    func cowOverCompressed(rules: String = "") throws -> Replay {
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<8, with: be64((1 << 62) | 69632))
        let setup = try CompressionAndShrinkTests().imageWithL2(l2, refcounted: [67, 68])
        var file = setup.file
        file.write(offset: 69632, data: [UInt8](repeating: 0x11, count: 79))
        return try Replay(file, rules: rules)
    }

    @Test func theFreeOfTheCompressedClusterPrecedesTheFullFlush() throws {
        var r = try cowOverCompressed()
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.read(69632, 512).events == [.readCompressed])
        #expect(r.write(70656, [UInt8](repeating: 0xcd, count: 1024)).events.suffix(3) == [.writeAio, .cowWrite, .pwritev])
        // The dependency flush of the free: no flush_to_os.
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 69])).events == [.clusterFree, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        // The free's refcount update, then the full flush: the L2 cache first (the
        // refcount cache now depends on it), then the refcount cache.
        var l2 = [UInt8](repeating: 0, count: 1024)
        l2.replaceSubrange(0..<8, with: be64((1 << 63) | 70656))
        #expect(r.write(68608, l2).events == [.refblockAlloc, .refblockLoad, .flushToOS, .l2Update, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 69]).enumerated().map { $0.offset == 2 * 68 + 1 ? 0 : $0.element }).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    /// flush_to_os once=on: blkdebug fails the L2 write-back, not the free's dependency flush.
    @Test func aFlushToOSRuleFailsTheL2WriteBack() throws {
        var r = try cowOverCompressed(rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"on\"\n")
        r.open()
        r.read(68608, 1024); r.read(2048, 1024); r.read(69632, 512)
        r.write(70656, [UInt8](repeating: 0xcd, count: 1024))
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 69])).decision == .perform)
        r.flush()
        #expect(r.write(68608, [UInt8](repeating: 0, count: 1024)).decision == .fail(errno: 5))
    }
}
