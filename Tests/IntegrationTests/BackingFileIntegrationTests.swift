import Foundation
import Testing

/// Overlays with a backing file: real qemu-io under libblkfault.so (the overlay matched,
/// its backing file not) against QEMU's own blkdebug on the overlay, each in its own
/// directory holding a fresh base and overlay (the overlay names its base relatively).
@Suite(.serialized) struct BackingFileIntegrationTests {
    static func rule(_ event: String, once: String = "on") -> String {
        "[inject-error]\nevent = \"\(event)\"\nerrno = \"5\"\nonce = \"\(once)\"\n"
    }

    /// A base with data at 0..128k (format qcow2 or raw) and an overlay of it in `dir`.
    func overlay(in dir: String, baseFormat: String) throws -> (overlay: String, base: String) {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let base = dir + "/base." + baseFormat
        var r = try run(qemuImg, ["create", "-q", "-f", baseFormat, base, "64M"])
        try #require(r.status == 0, "\(r)")
        r = try run(qemuIO, ["-f", baseFormat, "-c", "write -P 1 0 128k", base])
        try #require(r.status == 0, "\(r)")
        let ov = dir + "/t.qcow2"
        r = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", "base." + baseFormat, "-F", baseFormat, ov, "64M"])
        try #require(r.status == 0, "\(r)")
        return (ov, base)
    }

    @discardableResult
    func expectParity(_ rules: String, _ commands: [String], baseFormat: String = "qcow2", trace: Bool = false,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> (Outcome, String?) {
        try requireTools()
        let s = try Scratch()
        let cfg = try s.write("rules.cfg", rules)
        let a = try overlay(in: s.path("subject"), baseFormat: baseFormat)
        let b = try overlay(in: s.path("reference"), baseFormat: baseFormat)
        let tracePath = trace ? s.path("trace.jsonl") : nil
        let subject = try qemuIOUnderBlkfault(rules: cfg, image: a.overlay, commands, trace: tracePath)
        let reference = try qemuIOUnderBlkdebug(rules: cfg, image: b.overlay, commands)
        #expect(subject.normalized == reference.normalized, "qemu-io output", sourceLocation: sourceLocation)
        #expect(try check(a.overlay) == check(b.overlay), "qemu-img check", sourceLocation: sourceLocation)
        #expect(try bytes(a.overlay) == bytes(b.overlay), "overlay bytes", sourceLocation: sourceLocation)
        #expect(try bytes(a.base) == bytes(b.base), "base bytes", sourceLocation: sourceLocation)
        let text = try tracePath.map { try String(contentsOfFile: $0, encoding: .utf8) }
        return (subject, text)
    }

    @Test func readBackingAioFailsTheOverlaysNextRequest() throws {
        let (out, trace) = try expectParity(Self.rule("read_backing_aio"), ["read -P 1 0 128k", "write 1M 4k"], trace: true)
        // The read of backing data itself succeeds; the write after it fails.
        #expect(out.stdout.contains("read 131072/131072") && out.stdout.contains("write failed: Input/output error"))
        // The trace shows the backing read under the overlay's name, its event held.
        let t = try #require(trace)
        #expect(t.contains("\"backing\":") && t.contains("\"held_for_next_request\":[\"read_backing_aio\"]"))
    }

    @Test func rawBackingFile() throws {
        let (out, _) = try expectParity(Self.rule("read_backing_aio", once: "off"), ["read 0 64k", "write 1M 4k"], baseFormat: "raw")
        #expect(out.stdout.contains("write failed"))
    }

    @Test func copyOnWriteFromTheBackingFile() throws {
        for event in ["cow_read", "cow_write"] {
            let (out, _) = try expectParity(Self.rule(event), ["write 512 512", "read -P 1 0 512"])
            #expect(out.stdout.contains("write failed: Input/output error"), "\(event)")
        }
    }

    /// base <- mid <- top, rules on top: a read of data only the base (two files down) has.
    @Test func aBackingChain() throws {
        try requireTools()
        let s = try Scratch()
        let cfg = try s.write("rules.cfg", Self.rule("read_backing_aio"))
        var tops: [String] = []
        for side in ["subject", "reference"] {
            let dir = s.path(side)
            _ = try overlay(in: dir, baseFormat: "qcow2")
            let mid = dir + "/mid.qcow2", top = dir + "/top.qcow2"
            for (file, backing) in [(mid, "base.qcow2"), (top, "mid.qcow2")] {
                let r = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", file, "64M"])
                try #require(r.status == 0, "\(r)")
            }
            tops.append(top)
        }
        // mid has no data and no L2 table: only the base's reads show the backing read.
        let commands = ["read -P 1 0 64k", "write 1M 4k"]
        let subject = try qemuIOUnderBlkfault(rules: cfg, image: tops[0], commands)
        let reference = try qemuIOUnderBlkdebug(rules: cfg, image: tops[1], commands)
        #expect(subject.normalized == reference.normalized)
        #expect(subject.stdout.contains("write failed: Input/output error"), "\(subject.stdout)")
        #expect(try bytes(tops[0]) == bytes(tops[1]))
    }

    /// Rules for the overlay are the overlay's only: the backing file's own reads never fail.
    @Test func theBackingFileIsNotATarget() throws {
        let (out, _) = try expectParity(Self.rule("read_aio", once: "off"), ["read -P 1 0 128k"])
        #expect(out.stdout.contains("read 131072/131072"))
    }
}
