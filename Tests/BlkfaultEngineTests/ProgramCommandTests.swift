import Testing
import BlkfaultEngine

/// qemu-img rebase reads the old backing file through a BlockBackend of its own
/// (img_rebase's blk_old_backing): its reads raise nothing on the overlay's node.
@Suite struct ProgramCommandTests {
    @Test func theSubcommandSkipsOptionsAndTheTraceValue() {
        #expect(ProgramCommand(arguments: ["/usr/bin/qemu-img", "rebase", "-b", "b.qcow2", "t.qcow2"]).isQemuImgRebase)
        #expect(ProgramCommand(arguments: ["qemu-img", "-T", "qcow2*", "rebase", "-u", "t.qcow2"]).isQemuImgRebase)
        #expect(ProgramCommand(arguments: ["qemu-img", "--trace", "rebase", "commit", "t.qcow2"]).subcommand == "commit")
        #expect(!ProgramCommand(arguments: ["qemu-img", "commit", "rebase"]).isQemuImgRebase)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-C", "rebase"]).isQemuImgRebase)
        #expect(!ProgramCommand(arguments: []).isQemuImgRebase)
    }

    @Test func aRebasesOwnReadOfTheOldBackingFileRaisesNothing() throws {
        for byProgram in [false, true] {
            let t = BackingFileTests()
            var r = try t.overlay(rules: t.rule("read_backing_aio", once: "off"))
            r.engine.followBacking(format: "raw", file: t.rawBase, readByProgram: byProgram)
            _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 1024))
            // The copy of the differing data into the overlay: one buffer, whole clusters.
            let w = t.write(&r, 69632, 1024, segments: 1)
            #expect(w.events.contains(.readBackingAio) == !byProgram)
            #expect((w.decision == .perform) == byProgram)
        }
    }

    @Test func aCopyOnWriteInARebaseStillRaisesItsEvents() throws {
        let t = BackingFileTests()
        var r = try t.overlay(rules: t.rule("cow_read"))
        r.engine.followBacking(format: "raw", file: t.rawBase, readByProgram: true)
        // A partial write of the overlay: qcow2's COW reads head and tail through the overlay.
        _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 1024))
        let w = t.write(&r, 69632, 1024, segments: 3)
        #expect(w.events.contains(.cowRead) && w.events.contains(.readBackingAio))
        #expect(w.decision == .fail(errno: 5))
    }
}
