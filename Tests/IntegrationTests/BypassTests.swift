import Foundation
import Testing

/// qemu-io's `-i native` (linux-aio) and `-i io_uring` do their image I/O without
/// libc's pread/pwrite: blkfault cannot see or fail it, and must say so (a warning,
/// once per image, and a trace line) instead of looking as if no rule applied. The
/// default thread pool goes through libc: no warning, and the rule fires.
@Suite(.serialized) struct BypassTests {
    /// Fails every data write blkfault sees (once = off).
    static let rules = "[inject-error]\nevent = \"write_aio\"\n"
    static let commands = ["write -P 0x5a 0 4k", "read -P 0x5a 0 4k"]

    struct Traced {
        var outcome: Outcome
        var trace: [String]
        /// Lines of stderr that are blkfault's bypass warnings.
        var warnings: [Substring] { outcome.stderr.split(separator: "\n").filter { $0.hasPrefix("blkfault: warning:") } }
        /// Trace lines where a rule refused or faked an operation.
        var fired: [String] { trace.filter { $0.contains("\"action\":\"fail\"") || $0.contains("\"action\":\"pretend-success\"") } }
        var bypassLines: [[String: Any]] {
            trace.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .filter { $0["bypass"] != nil }
        }
    }

    /// qemu-io with extra options under blkfault, with a trace.
    func underBlkfault(_ s: Scratch, image: String, options: [String]) throws -> Traced {
        let rules = try s.write("rules.cfg", Self.rules)
        let trace = s.path("trace.jsonl")
        let env = ["LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": rules, "BLKFAULT_IMAGE": image, "BLKFAULT_TRACE": trace]
        let out = try run(qemuIO, ["-f", "qcow2"] + options + Self.commands.flatMap { ["-c", $0] } + [image], env: env)
        let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        let lines = text.split(separator: "\n").map(String.init)
        for line in lines {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "trace line is not JSON: \(line)")
        }
        return Traced(outcome: out, trace: lines)
    }

    /// The I/O went around blkfault: the write landed (the truthful outcome, since no
    /// rule could see it), no rule fired, and blkfault said why, once.
    func expectReportedBypass(_ r: Traced, image: String, way: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(r.outcome.status == 0, "\(r.outcome)", sourceLocation: sourceLocation)
        #expect(r.outcome.stdout.contains("wrote 4096/4096 bytes at offset 0"), "\(r.outcome)", sourceLocation: sourceLocation)
        #expect(r.outcome.stdout.contains("read 4096/4096 bytes at offset 0"), "\(r.outcome)", sourceLocation: sourceLocation)
        #expect(r.warnings.count == 1, "one warning per image: \(r.outcome)", sourceLocation: sourceLocation)
        let warning = r.warnings.first.map(String.init) ?? ""
        #expect(warning.contains("I/O on \(image) through \(way)"), "\(warning)", sourceLocation: sourceLocation)
        #expect(warning.contains("bypasses blkfault"), "\(warning)", sourceLocation: sourceLocation)
        #expect(r.fired.isEmpty, "no rule can have fired: \(r.fired)", sourceLocation: sourceLocation)
        let bypass = r.bypassLines
        #expect(bypass.count == 1, "\(r.trace)", sourceLocation: sourceLocation)
        #expect((bypass.first?["bypass"] as? String)?.hasPrefix(way) == true, "\(bypass)", sourceLocation: sourceLocation)
        #expect(bypass.first?["image"] as? String == image, "\(bypass)", sourceLocation: sourceLocation)
        // The data is on disk: nothing failed it.
        let check = try qemuIOPlain(image: image, ["read -P 0x5a 0 4k"])
        #expect(check.stdout.contains("read 4096/4096 bytes at offset 0"), "\(check)", sourceLocation: sourceLocation)
    }

    @Test func linuxAIOIsReportedNotFaulted() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let r = try underBlkfault(s, image: image, options: ["-i", "native", "-t", "none"])
        // io_setup (through syscall()) comes before the first io_submit: either names linux-aio.
        try expectReportedBypass(r, image: image, way: "linux-aio")
    }

    /// If this kernel or sandbox refuses io_uring, qemu-io itself fails to open the
    /// image; then only "no rule fired, and blkfault pretended nothing" is checked.
    @Test func ioUringIsReportedNotFaulted() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let r = try underBlkfault(s, image: image, options: ["-i", "io_uring", "-t", "none"])
        let unavailable = r.outcome.stderr.contains("can't open device") && r.outcome.stderr.contains("io_uring")
        if unavailable {
            // qemu-io's own verdict, the same without blkfault.
            let plain = try run(qemuIO, ["-f", "qcow2", "-i", "io_uring", "-t", "none", "-c", "read 0 4k", image])
            #expect(plain.status != 0 && plain.stderr.contains("io_uring"), "io_uring fails only under blkfault: \(r.outcome)\n\(plain)")
            #expect(r.fired.isEmpty, "\(r.fired)")
            #expect(!r.outcome.stdout.contains("Input/output error"), "\(r.outcome)")
            return
        }
        try expectReportedBypass(r, image: image, way: "io_uring")
    }

    /// The thread pool (qemu-io's default, or -i threads) goes through libc: blkfault
    /// sees every request, warns about nothing, and the rule fires.
    @Test(arguments: [[], ["-i", "threads", "-t", "none"]])
    func threadPoolIsSeenAndFaulted(options: [String]) throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let r = try underBlkfault(s, image: image, options: options)
        #expect(r.warnings.isEmpty, "\(r.outcome)")
        #expect(!r.outcome.stderr.contains("bypasses blkfault"), "\(r.outcome)")
        #expect(r.bypassLines.isEmpty, "\(r.trace)")
        #expect(r.outcome.stdout.contains("write failed: Input/output error"), "\(r.outcome)")
        #expect(!r.fired.isEmpty, "\(r.trace)")
    }
}
