import Testing
import BlkfaultEngine

/// qemu-io opening an image with a stored bitmap read-write (QEMU 7.2, strace): the
/// bitmaps are marked in use by rewriting the header, flushing, rewriting the bitmap
/// directory in place (a short write), rewriting the header again and flushing.
/// 1 GiB image, 1 KiB clusters, the directory (32 bytes) in cluster 67 @68608.
@Suite struct BitmapDirectoryTests {
    func imageWithBitmap() throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67]))
        // bitmaps extension at 112: nb_bitmaps 1, reserved, directory size 32, offset
        setup.file.write(offset: 112, data: [0x23, 0x85, 0x28, 0x75, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0, 0]
                         + be64(32) + be64(68608))
        setup.file.write(offset: 68608, data: [UInt8](repeating: 0x01, count: 32))
        return try Replay(setup.file)
    }

    @Test func theDirectoryRewriteAtOpenIsNeitherCompressedDataNorAFullFlush() throws {
        var r = try imageWithBitmap()
        r.open()
        let header = r.file.read(offset: 0, count: 1024)!
        #expect(r.write(0, header).events == [.pwritev])
        #expect(!r.flush().events.contains(.flushToOS))
        #expect(r.write(68608, [UInt8](repeating: 0x03, count: 32)).events == [.pwritev])
        #expect(r.write(0, header).events == [.pwritev])
        #expect(!r.flush().events.contains(.flushToOS))
    }

    @Test func aShortWriteOutsideTheDirectoryIsStillCompressedData() throws {
        var r = try imageWithBitmap()
        r.open()
        let events = r.write(69632, [UInt8](repeating: 0xed, count: 79)).events
        #expect(events.contains(.writeCompressed))
    }
}

/// Storing the bitmaps at close (qcow2_store_persistent_dirty_bitmaps), as real blkdebug
/// raises it under gdb (bitmapw, bitmapcmd): the directory read again, one allocation per
/// data cluster, table and new directory, the header, then the old directory's and old
/// table's frees before the I/O that follows each.
extension BitmapDirectoryTests {
    @Test func storingAtCloseAllocatesThenFreesTheOldStructures() throws {
        var r = try imageWithBitmap()
        // The bitmap's old table (one 8-byte entry, no data) in cluster 68, named by the
        // directory entry's first 8 bytes.
        r.file.write(offset: 68608, data: be64(69632) + [0, 0, 0, 1] + [UInt8](repeating: 0, count: 20))
        r.file.write(offset: 69632, data: be64(0))
        r = try Replay(r.file)
        r.open()
        #expect(r.read(68608, 32).events == [])              // the open's directory read
        let header = r.file.read(offset: 0, count: 1024)!
        r.write(0, header); r.flush()
        // Close: the qcow2 node's flush (no write request: no flush_to_disk), then the store.
        #expect(r.read(68608, 32).events == [.flushToOS])
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        let end = r.file.size + 1024 - r.file.size % 1024
        #expect(r.write(end, be64(0)).events == [.refblockAlloc, .refblockLoad, .pwritev])          // new table
        #expect(r.write(end + 1024, [UInt8](repeating: 2, count: 32)).events
                == [.clusterAlloc, .refblockAlloc, .refblockLoad, .pwritev])                        // new directory
        #expect(r.write(2048, r.refblock(2048, settingClusters: [67, 68, 70, 71])).events == [.refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
        #expect(r.write(0, header).events == [.pwritev])
        #expect(r.flush().events == [])
        // The old directory's free, then the old table read, then its free.
        #expect(r.read(69632, 8).events == [.clusterFree, .refblockAlloc, .refblockLoad])
        #expect(r.write(2048, r.refblock(2048, settingClusters: [70, 71])).events
                == [.clusterFree, .refblockAlloc, .refblockLoad, .refblockUpdatePart, .pwritev])
        #expect(r.flush().events == [])
    }

    @Test func theOpensDirectoryReadStartsNothing() throws {
        var r = try imageWithBitmap()
        r.open()
        #expect(r.read(68608, 32).events == [])
        #expect(r.read(2048, 1024).events == [.clusterAlloc])
        #expect(r.write(r.file.size, [UInt8](repeating: 0xcd, count: 1024)).events.contains(.writeAio))
    }
}
