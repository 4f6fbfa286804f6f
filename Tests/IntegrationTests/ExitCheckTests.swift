import Foundation
import Testing

/// The exit-time consistency check: an image changed in ways blkfault did not see is
/// reported ("blkfault: I/O bypassed blkfault on IMAGE: ..."), and ordinary QEMU runs,
/// whose every write blkfault sees, stay silent.
@Suite(.serialized) struct ExitCheckTests {
    static let bypassed = "blkfault: I/O bypassed blkfault on "

    struct Run {
        var outcome: Outcome
        var trace: [String]
        var exitLines: [String] { trace.filter { $0.contains("\"exit_check\"") } }
        var reports: [Substring] { outcome.stderr.split(separator: "\n").filter { $0.hasPrefix(ExitCheckTests.bypassed) } }
        var warnings: [Substring] { outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("blkfault: warning:") } }
    }

    func traced(_ s: Scratch, _ tool: String, _ args: [String], image: String, env extra: [String: String] = [:]) throws -> Run {
        let trace = s.path("trace-\(UUID().uuidString).jsonl")
        var env = ["LD_PRELOAD": Built.library, "BLKFAULT_IMAGE": image, "BLKFAULT_TRACE": trace]
        env.merge(extra) { $1 }
        let out = try run(tool, args, env: env)
        let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        return Run(outcome: out, trace: text.split(separator: "\n").map(String.init))
    }

    @Test(arguments: [
        ("syscall", "syscall()"),
        ("mmap", "mmap"),
        ("stdio", nil),
        ("grow", "syscall()"),
        ("aio_raw", "linux-aio (io_submit)"),
    ] as [(String, String?)])
    func unseenWriteIsReportedAtExit(mode: String, warning: String?) throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let writer = try CPrograms.build(s, "writer", CPrograms.writer)
        let r = try traced(s, writer, [mode, image], image: image)
        #expect(r.outcome.status == 0, "\(r.outcome)")
        #expect(r.reports.count == 1, "\(r.outcome)")
        let report = String(r.reports.first ?? "")
        #expect(report.hasPrefix(Self.bypassed + image + ": "), "\(report)")
        if mode == "grow" {
            #expect(report.contains("its size is"), "\(report)")
        } else {
            #expect(report.contains("its header (at 0x0) differs from what blkfault saw written, first at byte 0x48"), "\(report)")
        }
        #expect(r.exitLines.count == 1, "\(r.trace)")
        if let line = r.exitLines.first {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(json["image"] as? String == image)
        }
        // The run-time warning, when the way is one the shim notices; stdio is not.
        if let warning {
            #expect(r.warnings.count == 1 && r.warnings[0].contains("through \(warning)"), "\(r.outcome)")
        } else {
            #expect(r.warnings.isEmpty, "\(r.outcome)")
        }
    }

    /// The same change through pwrite, which blkfault sees: nothing to report.
    @Test(arguments: ["pwrite", "none"])
    func seenWriteIsSilent(mode: String) throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let writer = try CPrograms.build(s, "writer", CPrograms.writer)
        let r = try traced(s, writer, [mode, image], image: image)
        #expect(r.outcome.status == 0, "\(r.outcome)")
        #expect(r.outcome.stderr.isEmpty, "\(r.outcome)")
        #expect(r.exitLines.isEmpty, "\(r.trace)")
        if mode == "pwrite" { #expect(r.trace.contains { $0.contains("\"op\":\"write\"") }, "the write was seen: \(r.trace)") }
    }

    /// An io_uring set up through syscall() while the image is open: the run-time
    /// warning (no I/O is made, so the exit check has nothing to say).
    @Test func rawIoUringSetupIsWarned() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let writer = try CPrograms.build(s, "writer", CPrograms.writer)
        let r = try traced(s, writer, ["io_uring", image], image: image)
        #expect(r.outcome.status == 0, "\(r.outcome)")
        #expect(r.warnings.count == 1 && r.warnings[0].contains("I/O on \(image) through io_uring"), "\(r.outcome)")
        #expect(r.trace.contains { $0.contains("\"bypass\":\"io_uring") }, "\(r.trace)")
        #expect(r.reports.isEmpty, "\(r.outcome)")
    }

    /// A write through libaio's io_submit in a program that is not QEMU: blkfault performs
    /// it (the trace has it, the completion arrives with the byte count) and the exit
    /// check agrees; a rule on it fails the submission with its errno and nothing is written.
    @Test func libaioWriteIsSeenAndCanFail() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let writer = try CPrograms.build(s, "writer", CPrograms.writer)
        let seen = try traced(s, writer, ["libaio", image], image: image)
        #expect(seen.outcome.stdout == "submit=1 res=8\n", "\(seen.outcome)")
        #expect(seen.outcome.stderr.isEmpty, "\(seen.outcome)")
        #expect(seen.trace.contains { $0.contains("\"op\":\"write\",\"offset\":72,\"length\":8") }, "\(seen.trace)")
        #expect(seen.exitLines.isEmpty)
        #expect(try bytes(image).subdata(in: 72..<80) == Data("BYPASSED".utf8))

        let fresh = try s.image("b.qcow2")
        let before = try bytes(fresh)
        let rules = try s.write("rules.cfg", "[inject-error]\nevent = \"pwritev\"\nerrno = \"28\"\n")
        let failed = try traced(s, writer, ["libaio", fresh], image: fresh, env: ["BLKFAULT_CONFIG": rules, "BLKFAULT_MODEL": "raw"])
        #expect(failed.outcome.stdout == "submit=-28 res=0\n", "\(failed.outcome)")
        #expect(failed.trace.contains { $0.contains("\"action\":\"fail\"") }, "\(failed.trace)")
        #expect(try bytes(fresh) == before, "a failed request writes nothing")
        #expect(failed.reports.isEmpty && failed.warnings.isEmpty, "\(failed.outcome)")

        // BLKFAULT_AIO=report: the old way, the request goes to the kernel unseen, with the warning and the exit check.
        let third = try s.image("c.qcow2")
        let reported = try traced(s, writer, ["libaio", third], image: third, env: ["BLKFAULT_AIO": "report"])
        #expect(reported.outcome.stdout == "submit=1 res=8\n", "\(reported.outcome)")
        #expect(reported.warnings.count == 1 && reported.warnings[0].contains("through linux-aio (io_submit)"), "\(reported.outcome)")
        #expect(reported.reports.count == 1, "\(reported.outcome)")
    }

    /// Ordinary qemu-img and qemu-io runs: every write goes through libc (or linux-aio,
    /// which blkfault performs), so the check must stay silent, whatever the operation.
    @Test func ordinaryQemuRunsAreSilent() throws {
        try requireTools()
        let s = try Scratch()
        let a = s.path("a.qcow2"), b = s.path("b.qcow2"), c = s.path("c.qcow2"), top = s.path("top.qcow2")
        let pattern = s.path("*.qcow2")
        let steps: [(String, [String])] = [
            (qemuImg, ["create", "-q", "-f", "qcow2", a, "64M"]),
            (qemuIO, ["-f", "qcow2", "-c", "write -P 1 0 4k", "-c", "write 1M 1M", "-c", "write 60M 64k", a]),
            (qemuImg, ["snapshot", "-c", "s1", a]),
            (qemuIO, ["-f", "qcow2", "-c", "write -P 2 0 64k", "-c", "discard 1M 64k", a]),
            (qemuIO, ["-f", "qcow2", "-i", "native", "-t", "none", "-c", "write -P 5 32M 128k", "-c", "aio_write 40M 64k",
                      "-c", "aio_write 48M 64k", "-c", "aio_flush", a]),
            (qemuImg, ["resize", "-q", a, "2G"]),
            (qemuIO, ["-f", "qcow2", "-c", "write 1500M 4k", a]),
            (qemuImg, ["check", "-q", a]),
            (qemuImg, ["snapshot", "-d", "s1", a]),
            (qemuImg, ["convert", "-O", "qcow2", a, b]),
            (qemuImg, ["convert", "-c", "-O", "qcow2", a, c]),
            (qemuImg, ["amend", "-o", "compat=0.10", b]),
            (qemuImg, ["create", "-q", "-f", "qcow2", "-b", a, "-F", "qcow2", top]),
            (qemuIO, ["-f", "qcow2", "-c", "write -P 3 0 4k", top]),
            (qemuImg, ["commit", "-q", top]),
            (qemuImg, ["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", c, "16M"]),
            (qemuImg, ["resize", "-q", "--shrink", c, "8M"]),
            (qemuImg, ["check", "-r", "all", "-q", b]),
        ]
        for (tool, args) in steps {
            let r = try traced(s, tool, args, image: pattern)
            let what = "\((tool as NSString).lastPathComponent) \(args.joined(separator: " "))"
            #expect(r.outcome.status == 0, "\(what): \(r.outcome)")
            #expect(r.reports.isEmpty && r.warnings.isEmpty, "\(what): \(r.outcome)")
            #expect(r.exitLines.isEmpty, "\(what): \(r.exitLines)")
            #expect(!r.trace.isEmpty, "\(what): blkfault followed nothing, so the check proves nothing")
        }
    }
}
