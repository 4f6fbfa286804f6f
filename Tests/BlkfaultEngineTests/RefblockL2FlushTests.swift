import Testing
import BlkfaultEngine

/// iotest 026's refgrow (`write 0 64M`, 512-byte clusters), replayed from QEMU 7.2's I/O
/// as Tests/parity/tools/blkdebug_events.py recorded it under real blkdebug: right after
/// a chunk's data write, the next chunk's allocation needs a refcount block past the end
/// of the file; alloc_refcount_block flushes the L2 cache first (`refblock_alloc` before
/// the L2 write, its own fdatasync after it), no full flush. Here the refcount blocks cover
/// clusters 0...767 and the file ends with cluster 767; an L2 table at cluster 517.
@Suite struct RefblockL2FlushTests {
    func image(rules: String = "") throws -> Replay {
        var file = RefblockAllocationTests().fresh512()
        file.write(offset: 392704, data: [UInt8](repeating: 0, count: 512))     // file end: 768 clusters
        file.write(offset: 264192, data: RefblockAllocationTests().refblock(512, Array(0...5)))
        file.write(offset: 1536, data: be64((1 << 63) | 264704))                  // L1[0] -> L2 @264704
        return try Replay(file, rules: rules)
    }

    @Test func theL2WriteAfterTheDataIsAllocRefcountBlocksFlush() throws {
        var r = try image()
        r.open()
        #expect(r.read(264704, 512).events == [.l2Load])
        let data = r.write(392704, [UInt8](repeating: 0xcd, count: 512)).events
        #expect(data.contains(.writeAio) && data.contains(.refblockAlloc))
        #expect(r.write(264704, l2Slice(size: 512, host: 392704, count: 1, cluster: 512)).events == [.refblockAlloc, .l2Update, .pwritev])
        #expect(r.flush().events == [])
    }

    /// flush_to_os once=off: nothing here is a full flush, so nothing fails.
    @Test func aFlushToOSRuleLetsItThrough() throws {
        var r = try image(rules: "[inject-error]\nevent = \"flush_to_os\"\nerrno = \"5\"\nonce = \"off\"\n")
        r.open()
        r.read(264704, 512)
        r.write(392704, [UInt8](repeating: 0xcd, count: 512))
        #expect(r.write(264704, l2Slice(size: 512, host: 392704, count: 1, cluster: 512)).decision == .perform)
        #expect(r.flush().decision == .perform)
    }
}
