import Foundation
import Testing

/// The bad-rule-file corpus through the preload and through QEMU's own blkdebug: a file
/// QEMU rejects stops the program with `blkfault: FILE:LINE: <QEMU's message>` before any
/// I/O; a file QEMU accepts runs exactly as under blkdebug (output and bytes).
@Suite(.serialized) struct BadRuleFileIntegrationTests {
    static let rejected: [(String, String, String)] = [
        ("unknown-event", "[inject-error]\nevent = \"no_such_event\"\nerrno = \"5\"\n", ":2: invalid parameter value: no_such_event"),
        ("unknown-key", "[inject-error]\nevent = \"l1_update\"\nflavour = \"5\"\n", ":3: Invalid parameter 'flavour'"),
        ("bad-errno", "[inject-error]\nevent = \"l1_update\"\nerrno = \"eio\"\n", ":3: Parameter 'errno' expects a number"),
        ("unterminated", "[inject-error]\nevent = \"l1_update\"\nerrno = \"5\n", ":3: Parameter 'errno' expects a number"),
        ("binary", "\u{7f}ELF\u{2}\u{1}\u{1}\0\0\0\n", ":1: no group defined"),
    ]
    static let accepted: [(String, String)] = [
        ("empty", ""),
        ("duplicate-key", "[inject-error]\nevent = \"l2_alloc_write\"\nerrno = \"5\"\nerrno = \"28\"\n"),
        ("new-state-0", "[set-state]\nevent = \"l2_load\"\nnew_state = \"0\"\n[inject-error]\nevent = \"l2_alloc_write\"\nstate = \"2\"\nerrno = \"5\"\n"),
        ("sector-past-end", "[inject-error]\nevent = \"l2_alloc_write\"\nsector = \"999999999999\"\nerrno = \"5\"\n"),
        ("nul-in-comment", "# \0 comment\n[inject-error]\nevent = \"l2_alloc_write\"\nerrno = \"28\"\n"),
    ]

    @Test func rejectedFilesStopTheProgramWithFileLineMessage() throws {
        try requireTools()
        let s = try Scratch()
        for (name, text, expected) in Self.rejected {
            let cfg = try s.write(name + ".cfg", text)
            let img = try s.image(name + ".qcow2")
            let before = try bytes(img)
            let r = try qemuIOUnderBlkfault(rules: cfg, image: img, ["write 0 4k"])
            #expect(r.status == 1, "\(name): \(r)")
            #expect(r.stderr.hasPrefix("blkfault: \(cfg)\(expected)"), "\(name): \(r)")
            #expect(try bytes(img) == before, "\(name): the image was touched")
            let q = try qemuIOUnderBlkdebug(rules: cfg, image: img, ["write 0 4k"])
            #expect(q.stdout.contains("can't open device") || q.stderr.contains("can't open device"), "\(name): QEMU accepted it: \(q)")
        }
    }

    @Test func acceptedFilesRunAsUnderBlkdebug() throws {
        try requireTools()
        let s = try Scratch()
        for (name, text) in Self.accepted {
            let cfg = try s.write(name + ".cfg", text)
            let a = try s.image(name + "-a.qcow2")
            let b = try s.copy(a, to: name + "-b.qcow2")
            let subject = try qemuIOUnderBlkfault(rules: cfg, image: a, ["write 0 4k", "read 0 4k"])
            let reference = try qemuIOUnderBlkdebug(rules: cfg, image: b, ["write 0 4k", "read 0 4k"])
            #expect(subject.normalized == reference.normalized, "\(name)")
            #expect(try bytes(a) == bytes(b), "\(name): image bytes")
        }
    }
}
