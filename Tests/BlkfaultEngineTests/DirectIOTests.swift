import Testing
import BlkfaultEngine

/// qemu-io -t none (O_DIRECT): file-posix pads qcow2's unaligned writes to the file's
/// request alignment with a read-modify-write, below blkdebug (QEMU 7.2, parity workload
/// dnone). 1 KiB clusters: refcount table @1024, its first entry set.
@Suite struct DirectIOTests {
    @Test func aPaddedRefcountTableEntryWriteIsAHookup() throws {
        var r = try Replay(freshQcow2())
        r.open()
        var sector = r.file.read(offset: 1024, count: 512)!
        #expect(r.read(1024, 512).events == [])  // the padding's read
        sector.replaceSubrange(8..<16, with: be64(535552))  // entry 1: a new refblock
        #expect(r.write(1024, sector).events.contains(.refblockAllocHookup))
    }

    @Test func aPaddedWriteThatChangesNoEntryIsNot() throws {
        var r = try Replay(freshQcow2())
        r.open()
        let sector = r.file.read(offset: 1024, count: 512)!
        #expect(!r.write(1024, sector).events.contains(.refblockAllocHookup))
    }
}
