import Foundation
import Testing

/// fork, exec, posix_spawn/vfork, dup'd fds, close racing I/O and EINTR under the
/// preload, with a small C program (Tests/programs/procs.c) compiled here with gcc. Each
/// attempt writes 4 KiB at byte 1 MiB of a qcow2 file; the rule fails it once
/// (`once = "on"`) per engine, so the output shows which engine saw which write.
@Suite(.serialized) struct ProcessTests {
    static let once = "[inject-error]\nevent = \"pwritev\"\nerrno = \"28\"\nsector = \"2048\"\nonce = \"on\"\n"

    /// Compiles procs.c into the scratch directory.
    static func program(_ s: Scratch) throws -> String {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("programs/procs.c").path
        let binary = s.path("procs")
        let r = try run("/usr/bin/gcc", ["-O1", "-Wall", "-pthread", "-o", binary, source])
        try #require(r.status == 0, "gcc failed: \(r)")
        return binary
    }

    /// Runs a mode under the preload (and without it), under `timeout -s KILL`.
    static func mode(_ mode: String, rules: String = once, image: String? = nil) throws -> (preloaded: Outcome, plain: Outcome, trace: [String]) {
        try requireTools()
        let s = try Scratch()
        let binary = try program(s)
        let target = try image ?? s.image("p.qcow2")
        let cfg = try s.write("rules.cfg", rules)
        let trace = s.path("trace.jsonl")
        let preloaded = try run("/usr/bin/timeout", ["-s", "KILL", "120", binary, mode, target], env: [
            "LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": cfg, "BLKFAULT_IMAGE": target, "BLKFAULT_TRACE": trace])
        let plain = try run("/usr/bin/timeout", ["-s", "KILL", "120", binary, mode, target])
        let lines = ((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        return (preloaded, plain, lines)
    }

    static func failures(_ trace: [String]) -> Int { trace.filter { $0.contains("\"action\":\"fail\"") }.count }

    /// Without blkfault every attempt succeeds: the failures below are the rule's.
    static func expectAllOK(_ plain: Outcome, attempts: Int) {
        let lines = plain.stdout.split(separator: "\n").filter { $0.contains(" write: ") }
        #expect(lines.count == attempts && lines.allSatisfy { $0.hasSuffix(": ok") }, "\(plain)")
    }

    @Test func forkedChildKeepsWorkingOnItsCopy() throws {
        let r = try Self.mode("fork")
        #expect(r.preloaded.status == 0, "\(r.preloaded)")
        #expect(r.preloaded.stdout == "child write: ENOSPC\nchild write: ok\nparent write: ENOSPC\nparent write: ok\n")
        #expect(Self.failures(r.trace) == 2)
        Self.expectAllOK(r.plain, attempts: 4)
    }

    @Test func execStartsAFreshEngine() throws {
        let r = try Self.mode("exec")
        #expect(r.preloaded.status == 0, "\(r.preloaded)")
        #expect(r.preloaded.stdout == "before-exec write: ENOSPC\nafter-exec write: ENOSPC\nafter-exec write: ok\n")
        #expect(Self.failures(r.trace) == 2)
        Self.expectAllOK(r.plain, attempts: 3)
    }

    @Test func posixSpawnAndVforkChildrenGetFreshEngines() throws {
        let r = try Self.mode("spawn")
        #expect(r.preloaded.status == 0, "\(r.preloaded)")
        #expect(r.preloaded.stdout == """
            parent write: ENOSPC
            after-exec write: ENOSPC
            after-exec write: ok
            after-exec write: ENOSPC
            after-exec write: ok
            parent write: ok

            """)
        #expect(Self.failures(r.trace) == 3)
        Self.expectAllOK(r.plain, attempts: 6)
    }

    @Test func duplicatedFdsShareTheImage() throws {
        // once=off: every write through any duplicate is seen and failed.
        let rules = Self.once.replacingOccurrences(of: "once = \"on\"", with: "once = \"off\"")
        let r = try Self.mode("dup", rules: rules)
        #expect(r.preloaded.status == 0, "\(r.preloaded)")
        #expect(r.preloaded.stdout == "dup write: ENOSPC\nF_DUPFD write: ENOSPC\ndup2 write: ENOSPC\ndup2-after-close write: ENOSPC\n")
        #expect(Self.failures(r.trace) == 4)
        Self.expectAllOK(r.plain, attempts: 4)
    }

    @Test func closeRacingIOneitherCrashesNorHangs() throws {
        let r = try Self.mode("close-race", rules: "[inject-error]\nevent = \"read_aio\"\nstate = \"9\"\n")
        #expect(r.preloaded.status == 0, "\(r.preloaded)")
        #expect(r.preloaded.stdout == "close-race: done\n")
        #expect(!r.trace.isEmpty)
    }

    @Test func signalInterruptedReadReturnsEINTRUnchanged() throws {
        let s = try Scratch()
        let fifo = s.path("fifo")
        try #require(mkfifo(fifo, 0o644) == 0)
        let r = try Self.mode("eintr", rules: Self.once, image: fifo)
        #expect(r.plain.stdout == "read: -1 EINTR\nreadv: -1 EINTR\n", "\(r.plain)")
        #expect(r.preloaded.stdout == r.plain.stdout, "\(r.preloaded)")
        #expect(r.preloaded.status == 0)
        // The engine followed the reads (as raw: a FIFO has no qcow2 header).
        #expect(r.trace.filter { $0.contains("\"op\":\"read\"") }.count == 2)
    }
}
