import Testing
import BlkfaultEngine

/// A corrupt image: L2 entry 0 references host cluster 68 (@69632), whose refcount is 0.
/// qemu-io `write 1M 1k` in a new process (QEMU 7.2, strace): the L2 slice is loaded,
/// the free-space search reads the refblock and hands out cluster 68 again; the data
/// goes there, then the request's flush writes the refblock and the L2 table back.
/// 1 GiB image, 1 KiB clusters, the L2 table @68608.
@Suite struct CorruptImageTests {
    func corruptImage() throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67, 69]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: be64((1 << 63) | 69632) + be64((1 << 63) | 70656))
        setup.file.write(offset: 69632, data: [UInt8](repeating: 0xcd, count: 2048))
        return try Replay(setup.file)
    }

    @Test func aReferencedClusterWithRefcountZeroIsAllocatedAgain() throws {
        var r = try corruptImage()
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [])
        let data = r.write(69632, [UInt8](repeating: 0xcd, count: 1024)).events
        #expect(data == [.clusterAlloc, .refblockAlloc, .refblockLoad, .writeAio, .pwritev])
        // The request's flush: refblock, dependency flush, L2 table, final flush. The
        // first request of the process raises no flush_to_disk.
        var rest: [BlkdebugEvent] = []
        rest += r.write(2048, r.refblock(2048, settingClusters: [68])).events
        rest += r.flush().events
        var l2 = r.file.read(offset: 68608, count: 1024)!
        l2.replaceSubrange(1024 - 8..<1024, with: be64((1 << 63) | 69632))
        rest += r.write(68608, l2).events
        rest += r.flush().events
        #expect(rest.first == .flushToOS && !rest.contains(.flushToDisk))
    }

    @Test func dataWithItsRefcountIsStillAnOverwrite() throws {
        var r = try corruptImage()
        r.open()
        #expect(r.read(68608, 1024).events == [.l2Load])
        #expect(r.read(2048, 1024).events == [])
        #expect(r.write(70656, [UInt8](repeating: 0xcd, count: 1024)).events == [.writeAio, .pwritev])
    }
}
