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
