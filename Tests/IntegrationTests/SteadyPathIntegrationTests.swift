import Foundation
import Testing

/// The steady pre-filter in a real QEMU (Steady.swift, blkfault_steady.h): guest data
/// reads and writes that the engine would let through unchanged skip it, counted with
/// BLKFAULT_STATS; the rules still fail exactly the requests real blkdebug fails.
@Suite(.serialized) struct SteadyPathIntegrationTests {
    static let prefix = "blkfault: stats: "

    /// A 64 MiB image with its metadata preallocated, and where guest byte 0 lies in the file.
    func preallocated(_ s: Scratch) throws -> (path: String, dataStart: UInt64) {
        let p = s.path("pre.qcow2")
        let r = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", p, "64M"])
        try #require(r.status == 0, "\(r)")
        let map = try run(qemuImg, ["map", "--output=json", p])
        let offset = try #require(map.stdout.firstMatch(of: /"offset": (\d+)/).flatMap { UInt64($0.1) }, "\(map)")
        return (p, offset)
    }

    /// qemu-io in writeback mode (no flush after each write) under blkfault with
    /// BLKFAULT_STATS; the requests the filter let through (nil: no stats line).
    func underBlkfault(_ rules: String, _ image: String, _ commands: [String], trace: String? = nil) throws -> (Outcome, Int?) {
        var env = ["LD_PRELOAD": Built.library, "BLKFAULT_IMAGE": image, "BLKFAULT_CONFIG": rules, "BLKFAULT_STATS": "1"]
        if let trace { env["BLKFAULT_TRACE"] = trace }
        var out = try run(qemuIO, ["-f", "qcow2", "-t", "writeback"] + commands.flatMap { ["-c", $0] } + [image], env: env)
        let line = out.stderr.split(separator: "\n").first { $0.hasPrefix(Self.prefix) }
        out.stderr = out.stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix(Self.prefix) }.joined(separator: "\n")
        let count = line.flatMap { $0.firstMatch(of: /: (\d+) requests let through/).flatMap { Int($0.1) } }
        return (out.normalized, count)
    }

    func underBlkdebug(_ rules: String, _ image: String, _ commands: [String]) throws -> Outcome {
        try run(qemuIO, ["-f", "qcow2", "-t", "writeback"] + commands.flatMap { ["-c", $0] } + ["blkdebug:\(rules):\(image)"]).normalized
    }

    /// Reads and writes of 4 KiB in the first 64 KiB, one of each on guest byte 100 KiB.
    static let commands = ["read 0 64k", "read 0 4k", "read 4k 4k", "read 8k 4k", "read 100k 4k", "read 12k 4k",
                           "write -P 1 0 4k", "write -P 1 4k 4k", "write -P 1 8k 4k", "write -P 2 100k 4k",
                           "write -P 1 12k 4k", "read -P 1 0 4k", "read -P 2 100k 4k"]

    /// Both runs on copies of one image: same output, same bytes; the blkfault run's count.
    func compare(_ s: Scratch, rules text: String, dataStart: UInt64, image: String, trace: String? = nil) throws -> Int? {
        let rules = try s.write("rules-\(UUID().uuidString).cfg", text)
        let a = try s.copy(image, to: "a-\(UUID().uuidString).qcow2"), b = try s.copy(image, to: "b-\(UUID().uuidString).qcow2")
        let (subject, count) = try underBlkfault(rules, a, Self.commands, trace: trace)
        let reference = try underBlkdebug(rules, b, Self.commands)
        #expect(subject.stdout.replacingOccurrences(of: a, with: "IMG") == reference.stdout.replacingOccurrences(of: "blkdebug:\(rules):\(b)", with: "IMG").replacingOccurrences(of: b, with: "IMG"))
        #expect(subject.status == reference.status)
        #expect(try bytes(a) == bytes(b), "image bytes")
        return count
    }

    func sector(_ dataStart: UInt64, guest: UInt64) -> UInt64 { (dataStart + guest) / 512 }

    @Test func takenWhileNoRuleCanFireAndTheRulesStillFire() throws {
        try requireTools()
        let s = try Scratch()
        let (image, start) = try preallocated(s)
        // Covers guest byte 100 KiB: the read and the write there fail, nothing else.
        let rules = """
            [inject-error]
            event = "read_aio"
            errno = "5"
            sector = "\(sector(start, guest: 100 << 10))"

            [inject-error]
            event = "write_aio"
            errno = "28"
            sector = "\(sector(start, guest: 100 << 10))"

            """
        let count = try #require(try compare(s, rules: rules, dataStart: start, image: image))
        #expect(count > 0, "no request skipped the engine")
        // Not all: the first request on each cluster, the one the rule fails, and those
        // after a kind change (the active list is read_aio's or write_aio's) go through it.
        #expect(count < Self.commands.count - 2)
    }

    @Test func takenAcrossASetStateThatArmsARule() throws {
        try requireTools()
        let s = try Scratch()
        let (image, start) = try preallocated(s)
        let rules = """
            [set-state]
            event = "read_aio"
            state = "1"
            new_state = "2"

            [inject-error]
            event = "read_aio"
            state = "2"
            errno = "5"
            sector = "\(sector(start, guest: 100 << 10))"

            """
        let count = try #require(try compare(s, rules: rules, dataStart: start, image: image))
        #expect(count > 0)
    }

    @Test func notTakenWhenTheActiveRuleCoversEveryRequest() throws {
        try requireTools()
        let s = try Scratch()
        let (image, start) = try preallocated(s)
        let rules = "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n\n[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n"
        #expect(try compare(s, rules: rules, dataStart: start, image: image) == 0)
    }

    @Test func notTakenWithATrace() throws {
        try requireTools()
        let s = try Scratch()
        let (image, start) = try preallocated(s)
        let count = try compare(s, rules: "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n",
                                dataStart: start, image: image, trace: s.path("trace.jsonl"))
        #expect(count == nil, "an image whose requests are traced has no pre-filter")
    }

    @Test func notTakenForClustersNotYetAllocated() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("sparse.qcow2")
        let rules = try s.write("r.cfg", "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n")
        // Each write allocates a new cluster (metadata follows it): none is steady yet.
        let (out, count) = try underBlkfault(rules, image, (0..<6).map { "write -P 1 \($0 * 64)k 4k" })
        #expect(out.status == 0, "\(out)")
        #expect(count == 0)
    }
}
