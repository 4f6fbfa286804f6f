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

    @Test func aShrinkIsQemuImgResizeWithShrink() {
        #expect(ProgramCommand(arguments: ["qemu-img", "resize", "-f", "qcow2", "--shrink", "t.qcow2", "512M"]).isQemuImgShrink)
        #expect(!ProgramCommand(arguments: ["qemu-img", "resize", "t.qcow2", "2G"]).isQemuImgShrink)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-c", "truncate 512M", "--shrink"]).isQemuImgShrink)
    }

    @Test func aRebasesOwnReadOfTheOldBackingFileRaisesNothing() throws {
        for byProgram in [false, true] {
            let t = BackingFileTests()
            var r = try t.overlay(rules: t.rule("read_backing_aio", once: "off"))
            r.engine.noteCommand(ProgramCommand(arguments: byProgram ? ["qemu-img", "rebase", "-b", "", "t.qcow2"] : ["qemu-io", "-C", "t.qcow2"]))
            r.engine.followBacking(format: "raw", file: t.rawBase)
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
        r.engine.noteCommand(ProgramCommand(arguments: ["qemu-img", "rebase", "-b", "", "t.qcow2"]))
        r.engine.followBacking(format: "raw", file: t.rawBase)
        // A partial write of the overlay: qcow2's COW reads head and tail through the overlay.
        _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 1024))
        let w = t.write(&r, 69632, 1024, segments: 3)
        #expect(w.events.contains(.cowRead) && w.events.contains(.readBackingAio))
        #expect(w.decision == .fail(errno: 5))
    }
}

/// qemu-img writes back (its default cache mode): the close's flush raises flush_to_disk
/// after the first write request already (QEMU's write generation counts it), where
/// qemu-io's writethrough flush, inside the request, does not; and blkdebug failing that
/// close flush once is retried by qcow2_close.
extension ProgramCommandTests {
    @Test func qemuImgWritesBackUnlessToldOtherwise() {
        #expect(ProgramCommand(arguments: ["qemu-img", "rebase", "-b", "", "t.qcow2"]).writesBack)
        #expect(ProgramCommand(arguments: ["qemu-img", "commit", "t.qcow2"]).writesBack)
        #expect(!ProgramCommand(arguments: ["qemu-img", "rebase", "-t", "writethrough", "-b", "", "t.qcow2"]).writesBack)
        #expect(!ProgramCommand(arguments: ["qemu-img", "convert", "-O", "qcow2", "a", "b"]).writesBack)
        #expect(!ProgramCommand(arguments: ["qemu-io", "-c", "write 0 4k", "t.qcow2"]).writesBack)
    }

    func overwrite(writeback: Bool, rules: String = "") throws -> Step {
        var r = try HostRunExtensionTests().image(nextClusterUsed: false)
        r = try Replay(r.file, rules: rules)
        // qemu-img rebase flushes only at the close; writethrough, a request's flush is its own.
        r.engine.noteCommand(ProgramCommand(arguments: writeback ? ["qemu-img", "rebase", "-b", "", "t.qcow2"]
                                                                 : ["qemu-img", "rebase", "-t", "writethrough", "-b", "", "t.qcow2"]))
        r.open()
        r.read(68608, 1024)
        #expect(r.write(69632, [UInt8](repeating: 7, count: 1024)).events == [.writeAio, .pwritev])
        return r.flush()
    }

    @Test func theFirstFlushAfterAWriteReachesTheDiskInWritebackModeOnly() throws {
        #expect(try overwrite(writeback: false).events == [.flushToOS])
        #expect(try overwrite(writeback: true).events == [.flushToOS, .flushToDisk])
    }

    @Test func aOnceRuleOnTheWritebackClosesFlushIsAbsorbed() throws {
        let rule = "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\nonce = \"on\"\n"
        let step = try overwrite(writeback: true, rules: rule)
        #expect(step.decision == .perform && step.absorbed)
    }
}

extension ProgramCommandTests {
    @Test func aWritebackFlushOfACommandThatFlushesItselfIsNotAbsorbed() throws {
        // qemu-img commit's job flushes its target and reports the error.
        var r = try HostRunExtensionTests().image(nextClusterUsed: false)
        r = try Replay(r.file, rules: "[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\nonce = \"on\"\n")
        r.engine.noteCommand(ProgramCommand(arguments: ["qemu-img", "commit", "t.qcow2"]))
        r.open()
        r.read(68608, 1024)
        r.write(69632, [UInt8](repeating: 7, count: 1024))
        let step = r.flush()
        #expect(step.decision == .fail(errno: 5) && !step.absorbed)
    }
}

/// qemu-io is writethrough unless told otherwise (`-t none` under dnone: the close's flush
/// then raises flush_to_disk, as blkdebug does).
extension ProgramCommandTests {
    @Test func qemuIoWritesBackOnlyWithACacheModeThatDoes() {
        func back(_ a: [String]) -> Bool { ProgramCommand(arguments: ["qemu-io", "-f", "qcow2"] + a + ["t.qcow2"]).writesBack }
        #expect(!back(["-c", "write 0 4k"]))
        #expect(back(["-t", "none"]) && back(["-tnone"]) && back(["--cache=none"]) && back(["--cache", "writeback"]))
        #expect(back(["-n"]) && back(["--nocache", "-c", "read 0 4k"]))
        #expect(!back(["-t", "writethrough"]) && !back(["-t", "directsync"]) && !back(["-t", "unsafe"]))
        #expect(!back(["-t", "none", "-t", "writethrough"]) && back(["-i", "native", "-t", "none"]))
        #expect(!back(["-c", "-tnone"]) && !back(["-T", "-n"]))
    }
}

