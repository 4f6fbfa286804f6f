import Testing
import BlkfaultEngine

/// Writes into preallocated zero clusters (iotest 066, parity workload `it066`), replayed
/// from QEMU 7.2's I/O as Tests/parity/tools/blkdebug_events.py recorded it under real
/// blkdebug, with the events blkdebug raised before each I/O.
@Suite struct ZeroClusterWriteTests {
    /// `qemu-img create -f qcow2 -o cluster_size=65536 IMG 1G`, `write 0 128k`,
    /// `write -z 0 128k`: L2 table @262144, guest clusters 0 and 1 at host 327680 and
    /// 393216 with the zero flag (QCOW2_CLUSTER_ZERO_ALLOC).
    func zeroAllocImage() -> MemoryImage {
        var image = freshQcow2(clusterBits: 16)
        image.write(offset: 7 * 65536 - 1, data: [0])
        image.write(offset: 196608, data: be64(262144 | 1 << 63))                    // L1[0]
        image.write(offset: 262144, data: be64(327680 | 1 << 63 | 1) + be64(393216 | 1 << 63 | 1))
        for c in 4...6 { image.write(offset: 131072 + UInt64(c) * 2 + 1, data: [1]) }  // refcounts
        return image
    }

    /// qemu-io -c 'write 0 64k' -c 'write 65536 512': each write changes its L2 entry
    /// without allocating; the L2 cache depends on the refcount cache, so each request's
    /// flush is the dependency's fdatasync, the L2 write-back, then the final fdatasync.
    @Test func flushStartsAtTheDependencySyncOnce() throws {
        var r = try Replay(zeroAllocImage())
        r.open()
        r.read(262144, 65536)                                                    // l2_load
        #expect(r.write(327680, [UInt8](repeating: 0xcd, count: 65536)).events.contains(.writeAio))
        #expect(r.flush().events == [.flushToOS])                                // the dependency's
        let l2 = r.file.read(offset: 262144, count: 65536)!
        var cleared = l2; cleared[7] &= ~1                                       // entry 0: zero flag gone
        let firstWriteBack = r.write(262144, cleared).events
        #expect(firstWriteBack.contains(.l2Update) && !firstWriteBack.contains(.flushToOS))
        #expect(r.flush().events == [])                                          // first request: no flush_to_disk
        // The partial write: the cluster is zero-filled first (cluster_alloc_space).
        #expect(r.writeZeroes(393216, 65536).events.contains(.clusterAllocSpace))
        #expect(r.write(393216, [UInt8](repeating: 0xcd, count: 512)).events.contains(.writeAio))
        #expect(r.flush().events == [.flushToOS])
        var both = cleared; both[15] &= ~1
        let secondWriteBack = r.write(262144, both).events
        #expect(secondWriteBack.contains(.l2Update) && !secondWriteBack.contains(.flushToOS))
        #expect(r.flush().events == [.flushToDisk])
    }

    /// The same write into a plain data cluster changes no L2 entry: its flush is the
    /// fdatasync alone.
    @Test func plainDataClusterFlushIsTheSyncAlone() throws {
        var image = zeroAllocImage()
        image.write(offset: 262144, data: be64(327680 | 1 << 63) + be64(393216 | 1 << 63))
        var r = try Replay(image)
        r.open()
        r.read(262144, 65536)
        r.write(327680, [UInt8](repeating: 0xcd, count: 65536))
        #expect(r.flush().events == [.flushToOS])
        r.write(327680, [UInt8](repeating: 0xce, count: 65536))
        #expect(r.flush().events == [.flushToOS, .flushToDisk])
    }
}
