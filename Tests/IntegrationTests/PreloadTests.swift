import Foundation
import Testing

/// Real qemu-io and qemu-img under the built libblkfault.so, judged against
/// QEMU's own blkdebug on a fresh copy of the same image.
@Suite(.serialized) struct PreloadTests {
    static func seed(_ errno: Int) -> String {
        "[inject-error]\nevent = \"l2_alloc_write\"\nerrno = \"\(errno)\"\nonce = \"on\"\n"
    }

    /// Runs the commands under blkfault and under blkdebug on two fresh copies,
    /// and expects the same output, the same check verdict and the same bytes.
    func expectParity(rules text: String, commands: [String], clusterSize: Int? = nil, size: String = "64M",
                      prepare: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) throws -> Outcome {
        try requireTools()
        let s = try Scratch()
        let rules = try s.write("rules.cfg", text)
        let a = try s.image("a.qcow2", size: size, clusterSize: clusterSize)
        if !prepare.isEmpty { _ = try qemuIOPlain(image: a, prepare) }
        let b = try s.copy(a, to: "b.qcow2")
        let subject = try qemuIOUnderBlkfault(rules: rules, image: a, commands)
        let reference = try qemuIOUnderBlkdebug(rules: rules, image: b, commands)
        #expect(subject.normalized == reference.normalized, "qemu-io output", sourceLocation: sourceLocation)
        #expect(try check(a) == check(b), "qemu-img check", sourceLocation: sourceLocation)
        #expect(try bytes(a) == bytes(b), "image bytes", sourceLocation: sourceLocation)
        return subject
    }

    @Test func seedExampleWithEIO() throws {
        let out = try expectParity(rules: Self.seed(5), commands: ["write 0 4k"])
        #expect(out.stdout.contains("write failed: Input/output error"))
    }

    @Test func seedExampleWithESRCH() throws {
        let out = try expectParity(rules: Self.seed(3), commands: ["write 0 4k"])
        #expect(out.stdout.contains("write failed: No such process"))
    }

    /// A rule whose event this workload never raises: not one byte differs from a
    /// run without blkfault.
    @Test func ruleThatNeverFiresChangesNothing() throws {
        try requireTools()
        let s = try Scratch()
        let rules = try s.write("rules.cfg", "[inject-error]\nevent = \"refblock_alloc_switch_table\"\n")
        let a = try s.image("a.qcow2")
        let b = try s.copy(a, to: "b.qcow2")
        let commands = ["write -P 0x11 0 64k", "writev -P 0x22 128k 4k 8k", "read -P 0x11 0 64k", "write -z 256k 64k",
                        "discard 0 4k", "write -c 1M 64k", "flush", "read -v 0 512"]
        let subject = try qemuIOUnderBlkfault(rules: rules, image: a, commands)
        let plain = try qemuIOPlain(image: b, commands)
        #expect(subject.normalized == plain.normalized)
        #expect(subject.status == 0)
        #expect(try bytes(a) == bytes(b))
        #expect(try check(a) == check(b))
    }

    /// once = off: the active rule fails every later request, including the
    /// close-time cache flushes ("Failed to flush ..." as in iotest 026).
    @Test func onceOffFailsEveryLaterRequest() throws {
        let out = try expectParity(rules: "[inject-error]\nevent = \"l1_update\"\nerrno = \"28\"\nonce = \"off\"\n",
                                   commands: ["write 0 128k", "write 1M 4k", "read 0 4k"], clusterSize: 1024, size: "1G")
        #expect(out.stderr.contains("Failed to flush the L2 table cache: No space left on device"))
    }

    /// set-state chain: the first L1 update moves to state 2; only the second L1
    /// update (a later request) fails.
    @Test func stateChainFailsTheSecondL1Update() throws {
        let rules = """
        [set-state]
        event = "l1_update"
        state = "1"
        new_state = "2"

        [inject-error]
        event = "l1_update"
        state = "2"
        errno = "5"
        once = "on"
        """
        let out = try expectParity(rules: rules + "\n", commands: ["write 0 4k", "write 512M 4k", "write 256M 4k"],
                                   clusterSize: 1024, size: "1G")
        #expect(out.stdout.contains("wrote 4096/4096 bytes at offset 0"))
        #expect(out.stdout.contains("write failed: Input/output error"))
    }

    /// iotest 026's refcount growth case: a new refcount block's hook-up fails.
    @Test func refcountBlockHookupFailure() throws {
        _ = try expectParity(rules: "[inject-error]\nevent = \"refblock_alloc_hookup\"\nerrno = \"28\"\nonce = \"on\"\n",
                             commands: ["write 0 64M"], clusterSize: 512, size: "1G")
    }

    /// A bad rule file stops the program before it touches the image, naming
    /// the file and line.
    @Test(arguments: [
        ("[inject-error]\nevent = \"l2_alloc_wrte\"\n", 2, "invalid parameter value: l2_alloc_wrte"),
        ("[inject-error]\nevent = \"l1_update\"\nerrno = \"five\"\n", 3, "Parameter 'errno' expects a number"),
        ("[inject-error]\nevent = \"l1_update\"\nerrnum = \"5\"\n", 3, "Invalid parameter 'errnum'"),
        ("[inject-error]\nevent = \"l1_update\n", 2, "invalid parameter value: l1_update"),
    ])
    func badRuleFileStopsTheProgram(text: String, line: Int, message: String) throws {
        try requireTools()
        let s = try Scratch()
        let rules = try s.write("bad.cfg", text)
        let image = try s.image("a.qcow2")
        let before = try bytes(image)
        let out = try qemuIOUnderBlkfault(rules: rules, image: image, ["write 0 4k"])
        #expect(out.status == 1)
        #expect(out.stderr.hasPrefix("blkfault: \(rules):\(line): \(message)"), "\(out)")
        #expect(out.stdout.isEmpty, "qemu-io must not have run its command")
        #expect(try bytes(image) == before)
    }

    /// Without BLKFAULT_IMAGE every qcow2 file is a target (found by its magic);
    /// other files are left alone.
    @Test func magicFindsImagesWhenNoGlobIsGiven() throws {
        try requireTools()
        let s = try Scratch()
        let rules = try s.write("rules.cfg", Self.seed(5))
        let image = try s.image("a.qcow2")
        let out = try run(qemuIO, ["-f", "qcow2", "-c", "write 0 4k", image],
                          env: ["LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": rules])
        #expect(out.stdout.contains("write failed: Input/output error"))
        let raw = s.path("plain.raw")
        _ = try run(qemuImg, ["create", "-q", "-f", "raw", raw, "1M"])
        let rawOut = try run(qemuIO, ["-f", "raw", "-c", "write 0 4k", raw],
                             env: ["LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": rules])
        #expect(rawOut.stdout.contains("wrote 4096/4096"))
    }

    /// The trace names each operation with its events and what was done.
    @Test func traceRecordsTheInjection() throws {
        try requireTools()
        let s = try Scratch()
        let rules = try s.write("rules.cfg", Self.seed(5))
        let image = try s.image("a.qcow2")
        let trace = s.path("trace.jsonl")
        _ = try qemuIOUnderBlkfault(rules: rules, image: image, ["write 0 4k"], trace: trace)
        let lines = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
        let failed = lines.filter { $0.contains("\"action\":\"fail\"") }
        #expect(failed.count == 1)
        #expect(failed.first?.contains("\"l2_alloc_write\"") == true)
        #expect(failed.first?.contains("\"errno\":5") == true)
        for line in lines { #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line)") }
    }
}
