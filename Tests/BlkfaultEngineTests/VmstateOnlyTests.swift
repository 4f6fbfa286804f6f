import Testing
import BlkfaultEngine

/// A qemu-io whose every command is `write -b`/`read -b` (refgrowb, l2updb, 026's vmstate
/// cases): QEMU writes the VM state through qcow2's driver directly, so no flush ends a
/// request and the node's write generation never moves; blkdebug raises no
/// `flush_to_disk` at the close. Under load a chunk's data write could finish just before
/// an allocation's fdatasync that blkfault did not mark as owed, and blkfault took that
/// sync for a request's flush, then raised `flush_to_disk` at the close (a no-injection
/// difference, `--full --filter flush_to_disk --case=-refgrowb`: 2-3 of 8 differed).
@Suite struct VmstateOnlyTests {
    @Test func theCommandLineTellsAVmstateOnlyQemuIo() {
        #expect(ProgramCommand(arguments: ["qemu-io", "-f", "qcow2", "-c", "write -b 0 64M", "t.qcow2"]).isQemuIoVmstateOnly)
        #expect(ProgramCommand(arguments: ["/usr/bin/qemu-io", "-c", "write -b 0 128k", "--cmd", "read -b 0 128k", "t"]).isQemuIoVmstateOnly)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-c", "write -b 0 128k", "-c", "write 0 4k", "t"]).isQemuIoVmstateOnly)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-c", "write -P 1 0 4k", "t"]).isQemuIoVmstateOnly)
        #expect(!ProgramCommand(arguments: ["qemu-io", "t.qcow2"]).isQemuIoVmstateOnly)
        #expect(!ProgramCommand(arguments: ["qemu-img", "check", "-c", "write -b 0 4k"]).isQemuIoVmstateOnly)
    }

    /// Notes §3.4's S3 (a rewrite of allocated data, then an fdatasync): in a plain
    /// qemu-io that sync is the request's flush; in a vmstate-only one it raises nothing,
    /// and no later sync raises flush_to_disk.
    @Test func aSyncAfterAFinishedWriteIsNoRequestsFlush() throws {
        for vmstateOnly in [false, true] {
            var setup = try Replay(freshQcow2())
            setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(67...195)))
            setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
            setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 128, cluster: 1024))
            var r = try Replay(setup.file)
            r.engine.noteCommand(ProgramCommand(arguments: ["qemu-io", "-c", vmstateOnly ? "write -b 0 64M" : "write 0 4k", "t.qcow2"]))
            r.open()
            #expect(r.read(68608, 1024).events == [.l2Load])
            #expect(r.write(69632, [UInt8](repeating: 2, count: 4096)).events == [.writeAio, .pwritev])
            #expect(r.flush().events == (vmstateOnly ? [] : [.flushToOS]))
            #expect(r.write(69632, [UInt8](repeating: 3, count: 4096)).events == [.writeAio, .pwritev])
            #expect(r.flush().events == (vmstateOnly ? [] : [.flushToOS, .flushToDisk]))
        }
    }
}
