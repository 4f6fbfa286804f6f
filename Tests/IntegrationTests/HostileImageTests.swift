import Foundation
import Testing

/// Damaged and hostile qcow2 files opened by real qemu-io / qemu-img under the preload:
/// blkfault must never crash, hang or change what the program does. Each program's
/// stdout, exit status and the image bytes equal a run without the preload; stderr too,
/// apart from blkfault's own warning, which comes at most once per image and process,
/// and exactly once when the engine cannot model the file.
@Suite(.serialized) struct HostileImageTests {
    /// Never fires (state 9 is never reached), but makes the engine follow the image.
    static let rules = "[inject-error]\nevent = \"l2_load\"\nstate = \"9\"\nerrno = \"5\"\n"
        + "[inject-error]\nevent = \"write_aio\"\nstate = \"9\"\nerrno = \"5\"\n"

    struct Hostile: CustomTestStringConvertible, Sendable {
        let name: String
        /// The engine cannot read it as qcow2 and must say so once.
        let unmodellable: Bool
        let damage: @Sendable (inout Data, Header) -> Void
        var testDescription: String { name }
    }

    /// Offsets of a fresh 64 KiB-cluster image after one write, read from its header.
    struct Header {
        let l1Offset: Int, refcountTableOffset: Int, l2Offset: Int, refblockOffset: Int
    }

    static func be64(_ d: Data, _ at: Int) -> Int { d[at..<at + 8].reduce(0) { $0 << 8 | Int($1) } }
    static func put64(_ d: inout Data, _ at: Int, _ v: UInt64) {
        for k in 0..<8 { d[at + k] = UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * k)) }
    }
    static func put32(_ d: inout Data, _ at: Int, _ v: UInt32) {
        for k in 0..<4 { d[at + k] = UInt8(truncatingIfNeeded: v >> UInt32(24 - 8 * k)) }
    }

    static let cases: [Hostile] = [
        Hostile(name: "truncated header (50 bytes)", unmodellable: true) { d, _ in d = d.prefix(50) },
        Hostile(name: "v3 header cut at 80 bytes", unmodellable: true) { d, _ in d = d.prefix(80) },
        Hostile(name: "L1 table past end of file", unmodellable: true) { d, _ in put64(&d, 40, 1 << 40) },
        Hostile(name: "huge l1_size", unmodellable: true) { d, _ in put32(&d, 36, 0x7fff_ffff) },
        Hostile(name: "l1_size past the file", unmodellable: true) { d, _ in put32(&d, 36, 1 << 20) },
        Hostile(name: "refcount table past end of file", unmodellable: true) { d, _ in put64(&d, 48, 1 << 40) },
        Hostile(name: "huge refcount_table_clusters", unmodellable: true) { d, _ in put32(&d, 56, 0xffff_ffff) },
        Hostile(name: "refcount_order 7", unmodellable: true) { d, _ in put32(&d, 96, 7) },
        Hostile(name: "cluster_bits 31", unmodellable: true) { d, _ in put32(&d, 20, 31) },
        Hostile(name: "header_length 7", unmodellable: true) { d, _ in put32(&d, 100, 7) },
        Hostile(name: "version 4", unmodellable: true) { d, _ in put32(&d, 4, 4) },
        Hostile(name: "unaligned L1 offset", unmodellable: true) { d, _ in put64(&d, 40, 0x30008) },
        Hostile(name: "L2 table is the L1 table (cycle)", unmodellable: false) { d, h in
            put64(&d, h.l1Offset, UInt64(h.l1Offset) | 1 << 63) },
        Hostile(name: "L2 entry points at its own table (cycle)", unmodellable: false) { d, h in
            put64(&d, h.l2Offset, UInt64(h.l2Offset) | 1 << 63) },
        Hostile(name: "refblock is the refcount table (cycle)", unmodellable: false) { d, h in
            put64(&d, h.refcountTableOffset, UInt64(h.refcountTableOffset)) },
        Hostile(name: "L1 table overlaps the refcount table", unmodellable: false) { d, h in
            put64(&d, 40, UInt64(h.refcountTableOffset)) },
        Hostile(name: "L1 table in the header cluster", unmodellable: false) { d, _ in put64(&d, 40, 0) },
        Hostile(name: "L2 table past end of file", unmodellable: false) { d, h in
            put64(&d, h.l1Offset, 1 << 40 | 1 << 63) },
        Hostile(name: "refblock past end of file", unmodellable: false) { d, h in
            put64(&d, h.refcountTableOffset, 1 << 40) },
        Hostile(name: "every L2 entry compressed garbage", unmodellable: false) { d, h in
            for k in 0..<8192 { put64(&d, h.l2Offset + 8 * k, 0x7fff_ffff_ffff_ffff) } },
        Hostile(name: "snapshot table past end of file", unmodellable: false) { d, _ in
            put32(&d, 60, 1000); put64(&d, 64, 1 << 40) },
        Hostile(name: "header extension longer than the cluster", unmodellable: false) { d, _ in
            put32(&d, 104, 0xe279_2aca); put32(&d, 108, 0xffff_fff0) },
        Hostile(name: "refcount block of 0xff", unmodellable: false) { d, h in
            for k in 0..<65536 { d[h.refblockOffset + k] = 0xff } },
    ]

    /// The programs, as argument lists (the image path appended).
    static let programs: [[String]] = [
        [qemuIO, "-f", "qcow2", "-c", "read 0 64k", "-c", "write -P 0x33 0 4k", "-c", "write 1M 64k",
         "-c", "discard 0 64k", "-c", "write -z 2M 64k", "-c", "map", "-c", "flush"],
        [qemuImg, "check", "-f", "qcow2"],
        [qemuImg, "info", "-f", "qcow2"],
        [qemuImg, "map", "-f", "qcow2"],
    ]

    static func baseImage(_ s: Scratch) throws -> (Data, Header) {
        let img = try s.image("base.qcow2")
        _ = try qemuIOPlain(image: img, ["write -P 0x5a 0 64k"])
        let d = try bytes(img)
        let l1 = be64(d, 40), rt = be64(d, 48)
        let h = Header(l1Offset: l1, refcountTableOffset: rt,
                       l2Offset: be64(d, l1) & 0x00ff_ffff_ffff_fe00, refblockOffset: be64(d, rt) & 0x00ff_ffff_ffff_fe00)
        try #require(h.l2Offset > 0 && h.refblockOffset > 0, "unexpected base image layout")
        return (d, h)
    }

    /// Under `timeout -s KILL` (QEMU blocks SIGTERM in some states): a hang is a failure
    /// with exit status 137, not a stuck test run. Output goes to files: a damaged image
    /// makes `qemu-img check` print megabytes on stderr, which would fill a pipe read second.
    static func runBounded(_ argv: [String], env extra: [String: String] = [:], in s: Scratch) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-s", "KILL", "60"] + argv
        var env = ProcessInfo.processInfo.environment
        for key in ["LD_PRELOAD", "BLKFAULT_CONFIG", "BLKFAULT_IMAGE", "BLKFAULT_TRACE", "BLKFAULT_MODEL"] { env[key] = nil }
        env.merge(extra) { $1 }
        process.environment = env
        let out = s.path("out.txt"), err = s.path("err.txt")
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Outcome(stdout: String(decoding: try bytes(out), as: UTF8.self),
                       stderr: String(decoding: try bytes(err), as: UTF8.self), status: process.terminationStatus)
    }

    /// Byte equality that copes with sparse files: a write through an L1 table at 1 TiB
    /// leaves a 1 TiB file. Compares sizes, then the data extents (SEEK_DATA/SEEK_HOLE) of both.
    static func sameContent(_ a: String, _ b: String) -> Bool {
        func extents(_ fd: Int32) -> [(Int, Int)] {
            var out: [(Int, Int)] = []
            var pos = 0
            while true {
                let start = lseek(fd, off_t(pos), 3) // SEEK_DATA (not exported to Swift)
                if start < 0 { return out }
                let end = lseek(fd, start, 4) // SEEK_HOLE
                out.append((Int(start), Int(end)))
                pos = Int(end)
            }
        }
        let fa = open(a, O_RDONLY), fb = open(b, O_RDONLY)
        defer { close(fa); close(fb) }
        guard fa >= 0, fb >= 0 else { return false }
        var sa = stat(), sb = stat()
        guard fstat(fa, &sa) == 0, fstat(fb, &sb) == 0, sa.st_size == sb.st_size else { return false }
        // Extents may be split differently; compare the union of both as byte ranges.
        for (start, end) in extents(fa) + extents(fb) {
            var at = start
            var ba = [UInt8](repeating: 0, count: 1 << 20), bb = ba
            while at < end {
                let n = min(1 << 20, end - at)
                guard pread(fa, &ba, n, off_t(at)) == n, pread(fb, &bb, n, off_t(at)) == n,
                      ba[0..<n] == bb[0..<n] else { return false }
                at += n
            }
        }
        return true
    }

    static func withoutWarnings(_ text: String) -> (String, Int) {
        var kept: [Substring] = [], warnings = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("blkfault: warning: ") { warnings += 1 } else { kept.append(line) }
        }
        return (kept.joined(separator: "\n"), warnings)
    }

    @Test(arguments: cases) func hostileImage(_ hostile: Hostile) throws {
        try requireTools()
        let s = try Scratch()
        var (data, header) = try Self.baseImage(s)
        hostile.damage(&data, header)
        let rules = try s.write("never.cfg", Self.rules)
        for (i, program) in Self.programs.enumerated() {
            let plainImage = s.path("plain\(i).qcow2"), preloadImage = s.path("preload\(i).qcow2")
            try data.write(to: URL(fileURLWithPath: plainImage))
            try data.write(to: URL(fileURLWithPath: preloadImage))
            let plain = try Self.runBounded(program + [plainImage], in: s)
            let trace = s.path("trace\(i).jsonl")
            let preloaded = try Self.runBounded(program + [preloadImage], env: [
                "LD_PRELOAD": Built.library, "BLKFAULT_CONFIG": rules, "BLKFAULT_IMAGE": preloadImage, "BLKFAULT_TRACE": trace], in: s)
            let what = "\(program[0].split(separator: "/").last!) \(program[1]) on \(hostile.name)"
            let a = plain.normalized, b = preloaded.normalized
            #expect(b.status == a.status, "\(what): exit status\n\(b)")
            #expect(b.stdout.replacingOccurrences(of: preloadImage, with: "IMG")
                    == a.stdout.replacingOccurrences(of: plainImage, with: "IMG"), "\(what): stdout")
            let (stderr, warnings) = Self.withoutWarnings(b.stderr)
            #expect(stderr.replacingOccurrences(of: preloadImage, with: "IMG")
                    == a.stderr.replacingOccurrences(of: plainImage, with: "IMG"), "\(what): stderr")
            #expect(Self.sameContent(preloadImage, plainImage), "\(what): image bytes")
            if hostile.unmodellable {
                #expect(warnings == 1, "\(what): expected one warning\n\(b.stderr)")
                if warnings == 1 { #expect(b.stderr.contains("cannot be modelled"), "\(what)") }
            } else {
                #expect(warnings == 0, "\(what): the engine models this file; no warning expected\n\(b.stderr)")
            }
            // The engine followed the file (a trace exists) and failed nothing.
            let lines = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
            #expect(!lines.isEmpty, "\(what): no trace: the image was not followed")
            #expect(!lines.contains("\"action\":\"fail\"") && !lines.contains("pretend-success"), "\(what): a rule fired")
        }
    }
}
