import Foundation
import Testing

/// blkfault's actions beyond blkdebug, each through the example in rules/ that shows it,
/// with real qemu-io / qemu-img checking the outcome.
@Suite(.serialized) struct ActionsTests {
    static func rules(_ name: String) -> String {
        RuleFilesTests.rulesDirectory.appendingPathComponent(name).path
    }

    /// qemu-io under libblkfault.so; `readOnly` adds -r.
    static func io(_ rules: String, _ image: String, _ commands: [String], trace: String? = nil,
                   env extra: [String: String] = [:], readOnly: Bool = false) throws -> Outcome {
        var env = ["LD_PRELOAD": Built.library, "BLKFAULT_IMAGE": image, "BLKFAULT_CONFIG": rules]
        if let trace { env["BLKFAULT_TRACE"] = trace }
        env.merge(extra) { $1 }
        return try run(qemuIO, ["-f", "qcow2"] + (readOnly ? ["-r"] : []) + commands.flatMap { ["-c", $0] } + [image], env: env)
    }

    static func plain(_ image: String, _ commands: [String], readOnly: Bool = false) throws -> Outcome {
        try run(qemuIO, ["-f", "qcow2"] + (readOnly ? ["-r"] : []) + commands.flatMap { ["-c", $0] } + [image])
    }

    /// The trace's records, as dictionaries.
    static func trace(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    // MARK: [crash] with lose-unsynced

    @Test func powerLossUndoesWritesSinceTheLastFlush() throws {
        try requireTools()
        let s = try Scratch()
        let commands = ["write -P 0xaa 0 64k", "flush", "write -P 0xbb 0 64k", "flush"]
        let image = try s.image("a.qcow2")
        let t = s.path("t.json")
        let r = try Self.io(Self.rules("power-loss-after-overwrite.cfg"), image, commands, trace: t)
        #expect(r.status == SIGKILL, "\(r)")
        // Pattern A was flushed: it survives; pattern B was not: it is gone.
        let read = try Self.plain(image, ["read -P 0xaa 0 64k"])
        #expect(read.status == 0 && read.stdout.contains("read 65536/65536"), "\(read)")
        let c = try check(image)
        #expect(c.status == 0 && c.stdout.contains("No errors were found"), "\(c)")
        let loss = try #require(try Self.trace(t).compactMap { $0["power_loss"] as? [String: Any] }.first)
        #expect(loss["undone_writes"] as? Int == 1 && loss["undone_bytes"] as? Int == 65536)
        let crash = try Self.trace(t).first { ($0["actions"] as? [[String: Any]])?.first?["action"] as? String == "crash" }
        #expect((crash?["actions"] as? [[String: Any]])?.first?["occurrence"] as? Int == 2)

        // The same crash without lose-unsynced keeps pattern B: the undo is what made A come back.
        let plainCrash = try s.write("crash.cfg", "[crash]\nevent = \"write_aio\"\noccurrence = \"2\"\nwhen = \"after\"\n")
        let other = try s.image("b.qcow2")
        #expect(try Self.io(plainCrash, other, commands).status == SIGKILL)
        #expect(try Self.plain(other, ["read -P 0xbb 0 64k"]).status == 0)
        #expect(try Self.plain(other, ["read -P 0xaa 0 64k"]).stdout.contains("Pattern verification failed"))
    }

    /// Past BLKFAULT_UNSYNCED_LIMIT the pre-images are dropped: blkfault says so, and the
    /// crash undoes nothing rather than leave a half-undone file.
    @Test func unsyncedBoundIsSaidAndNothingIsUndone() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let t = s.path("t.json")
        let r = try Self.io(Self.rules("power-loss-after-overwrite.cfg"), image,
                            ["write -P 0xaa 0 64k", "flush", "write -P 0xbb 0 64k", "flush"],
                            trace: t, env: ["BLKFAULT_UNSYNCED_LIMIT": "4096"])
        #expect(r.status == SIGKILL, "\(r)")
        #expect(r.stderr.contains("more than 4096 bytes written to \(image) since its last flush"), "\(r)")
        #expect(r.stderr.contains("lose-unsynced: over the 4096-byte bound since the last flush; nothing undone"), "\(r)")
        #expect(try Self.trace(t).contains { ($0["note"] as? String)?.contains("nothing undone") == true })
        #expect(try Self.plain(image, ["read -P 0xbb 0 64k"]).status == 0)
    }

    // MARK: [torn-write]

    @Test func tornL2UpdateLeaksTheNewCluster() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        #expect(try Self.plain(image, ["write -P 0x11 0 64k"]).status == 0)
        let t = s.path("t.json")
        let r = try Self.io(Self.rules("torn-l2-update.cfg"), image, ["write -P 0x22 4M 64k"], trace: t)
        #expect(r.status == SIGKILL, "\(r)")
        let records = try Self.trace(t)
        let torn = try #require(records.first { $0["action"] as? String == "torn-write" })
        #expect(torn["kept"] as? Int == 512 && (torn["events"] as? [String])?.contains("l2_update") == true)
        // blkfault's prediction: the L2 entry of guest 4M (index 64, past the first sector)
        // does not reach the file, so the data cluster it points to, refcounted before the
        // L2 table was written, is referenced by nothing: one leaked cluster, that one.
        let lost = try #require(torn["lost_l2_entries"] as? [[String: Any]])
        #expect(lost.count == 1 && lost.first?["guest_offset"] as? Int == 4 << 20 && lost.first?["on_disk"] as? String == "0x0")
        let written = try #require(UInt64((lost.first?["written"] as? String ?? "").dropFirst(2), radix: 16))
        let cluster = Int((written & 0x00ff_ffff_ffff_fe00) / 65536)
        let data = try #require(records.first { ($0["events"] as? [String])?.contains("write_aio") == true })
        #expect(data["offset"] as? Int == cluster * 65536)
        let c = try check(image)
        #expect(c.status == 3, "\(c)")
        #expect(c.stderr.contains("Leaked cluster \(cluster) refcount=1 reference=0"), "\(c)")
        #expect(c.stdout.contains("1 leaked clusters were found"), "\(c)")
        #expect(try Self.plain(image, ["read -P 0 4M 64k"]).status == 0)
        #expect(try Self.plain(image, ["read -P 0x11 0 64k"]).status == 0)
        let map = try run(Built.cli, ["map", image])
        #expect(map.stdout.contains("0x\(String(cluster * 65536, radix: 16))") && map.stdout.contains("leaked, 1 cluster"), "\(map)")
    }

    /// A torn write that fails with an errno lets the program go on to exit: the bytes blkfault
    /// wrote itself are not "I/O around blkfault" for the exit check.
    @Test func tornWriteWithAnErrnoIsNotABypass() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let rules = try s.write("torn.cfg", "[torn-write]\nevent = \"l1_update\"\nkeep = \"4\"\nthen = \"5\"\n")
        let before = try bytes(image)
        let r = try Self.io(rules, image, ["write -P 0x22 0 64k"])
        #expect(r.stdout.contains("write failed: Input/output error") || r.stderr.contains("Input/output error"), "\(r)")
        #expect(try bytes(image) != before, "the kept prefix should have reached the file")
        #expect(!r.stderr.contains("bypassed"), "\(r)")
    }

    // MARK: [corrupt]

    @Test func corruptL2EntryOnLoadLeavesTheFileAlone() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        #expect(try Self.plain(image, ["write -P 0x11 0 64k"]).status == 0)
        let reference = try s.copy(image, to: "b.qcow2")
        let before = try bytes(image)
        let t = s.path("t.json")
        let r = try Self.io(Self.rules("corrupt-l2-entry.cfg"), image, ["read -P 0x11 0 4k"], trace: t, readOnly: true)
        #expect(try bytes(image) == before, "the image file changed")
        #expect(r.stderr.contains("Cluster allocation offset 0x50200 unaligned (L2 offset: 0x40000, L2 index: 0)"), "\(r)")
        #expect(r.stdout.contains("read failed: Input/output error"), "\(r)")
        // QEMU says exactly what it says for the same entry really on disk.
        let load = try #require(try Self.trace(t).first { ($0["events"] as? [String])?.contains("l2_load") == true })
        let handle = try #require(FileHandle(forWritingAtPath: reference))
        try handle.seek(toOffset: UInt64(try #require(load["offset"] as? Int)))
        handle.write(Data([0x80, 0, 0, 0, 0, 0x05, 0x02, 0x00]))
        try handle.close()
        #expect(r.normalized == (try Self.plain(reference, ["read -P 0x11 0 4k"], readOnly: true)).normalized)
        #expect(try Self.plain(image, ["read -P 0x11 0 4k"], readOnly: true).status == 0)
    }

    @Test func bitRotInAGuestDataRead() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        #expect(try Self.plain(image, ["write -P 0x11 0 64k"]).status == 0)
        let before = try bytes(image)
        let r = try Self.io(Self.rules("bit-rot-data-read.cfg"), image, ["read -P 0x11 0 4k", "read -P 0x11 0 4k"])
        // once: only the first read sees it.
        #expect(r.stdout.components(separatedBy: "Pattern verification failed").count == 2, "\(r)")
        // Byte 100 (0x64) with its low bit flipped, nothing else.
        let dump = try Self.io(Self.rules("bit-rot-data-read.cfg"), image, ["read -v 0 128"])
        #expect(dump.stdout.contains("00000060:  11 11 11 11 10 11 11 11 11 11 11 11 11 11 11 11"), "\(dump)")
        #expect(dump.stdout.components(separatedBy: " 10 ").count == 2, "\(dump)")
        #expect(try bytes(image) == before)
    }

    @Test func corruptHeaderFieldRefusesReadWriteOpen() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let before = try bytes(image)
        let r = try Self.io(Self.rules("corrupt-bit-header.cfg"), image, ["read 0 4k"])
        #expect(r.status != 0 && r.stderr.contains("qcow2: Image is corrupt; cannot be opened read/write"), "\(r)")
        #expect(try bytes(image) == before)
        #expect(try Self.plain(image, ["read 0 4k"]).status == 0)
    }

    // MARK: occurrence, probability, seed

    @Test func occurrencePicksTheNthRaise() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let t = s.path("t.json")
        let offsets = [0, 65536, 131072, 196608, 262144]
        let r = try Self.io(Self.rules("third-data-write-eio.cfg"), image, offsets.map { "write \($0) 4k" }, trace: t)
        for (n, offset) in offsets.enumerated() {
            #expect(r.stdout.contains("wrote 4096/4096 bytes at offset \(offset)\n") == (n != 2), "write \(n + 1): \(r)")
        }
        #expect(r.stdout.components(separatedBy: "write failed: Input/output error").count == 2)
        let failed = try Self.trace(t).filter { $0["action"] as? String == "fail" }
        #expect(failed.count == 1 && failed.first?["occurrence"] as? Int == 3)
    }

    /// Which of 24 writes failed, and the seeds in the trace.
    static func flakyRun(seed: String, in s: Scratch, name: String) throws -> (failed: [Int], seeds: Set<Int>) {
        let image = try s.image(name + ".qcow2")
        let t = s.path(name + ".json")
        let writes = (0..<24).map { "write \($0 * 65536) 4k" }
        let r = try Self.io(Self.rules("flaky-disk.cfg"), image, writes, trace: t, env: ["BLKFAULT_SEED": seed])
        let failed = (0..<24).filter { !r.stdout.contains("wrote 4096/4096 bytes at offset \($0 * 65536)\n") }
        let seeds = Set(try Self.trace(t).compactMap { $0["seed"] as? Int })
        return (failed, seeds)
    }

    @Test func probabilityWithASeedReplaysExactly() throws {
        try requireTools()
        let s = try Scratch()
        let first = try Self.flakyRun(seed: "7", in: s, name: "a")
        let again = try Self.flakyRun(seed: "7", in: s, name: "b")
        let other = try Self.flakyRun(seed: "8", in: s, name: "c")
        #expect(!first.failed.isEmpty && first.failed.count < 24, "\(first.failed)")
        #expect(first.failed == again.failed)
        #expect(first.failed != other.failed)
        #expect(first.seeds == [7] && other.seeds == [8])
        // A rule's own seed wins over BLKFAULT_SEED (same file, same rule line: same draws).
        let flaky = try String(contentsOfFile: Self.rules("flaky-disk.cfg"), encoding: .utf8)
        let own = try s.write("own.cfg", flaky + "seed = \"7\"\n")
        let image = try s.image("d.qcow2")
        let r = try Self.io(own, image, (0..<24).map { "write \($0 * 65536) 4k" }, env: ["BLKFAULT_SEED": "8"])
        #expect((0..<24).filter { !r.stdout.contains("wrote 4096/4096 bytes at offset \($0 * 65536)\n") } == first.failed)
    }

    // MARK: delay-ns

    @Test func delayNsDelaysRequests() throws {
        try requireTools()
        let s = try Scratch()
        let commands = ["write 0 4k", "write 64k 4k"]
        let baselineImage = try s.image("base.qcow2")
        var start = Date()
        #expect(try Self.plain(baselineImage, commands).status == 0)
        let baseline = Date().timeIntervalSince(start)
        let image = try s.image("a.qcow2")
        let t = s.path("t.json")
        start = Date()
        let r = try Self.io(Self.rules("slow-disk.cfg"), image, commands, trace: t)
        let slow = Date().timeIntervalSince(start)
        #expect(r.status == 0 && r.stdout.contains("wrote 4096/4096 bytes at offset 65536"), "\(r)")
        #expect(slow >= 0.6 && slow - baseline >= 0.5, "slow \(slow) s, baseline \(baseline) s")
        // As in QEMU 11.1, the rule stays active (blkdebug's active list) and delays the
        // requests that follow each data write too; every data write is delayed.
        let records = try Self.trace(t)
        let dataWrites = records.filter { ($0["events"] as? [String])?.contains("write_aio") == true }
        #expect(dataWrites.count == 2 && dataWrites.allSatisfy { $0["delay_ns"] as? Int == 300_000_000 })
        // With an errno the request fails after the delay.
        let failing = try s.write("f.cfg", "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\ndelay-ns = \"300000000\"\nonce = \"on\"\n")
        start = Date()
        let f = try Self.io(failing, try s.image("b.qcow2"), ["write 0 4k"])
        #expect(Date().timeIntervalSince(start) >= 0.3 && f.stdout.contains("write failed: Input/output error"), "\(f)")
    }

    // MARK: [break]

    @Test func breakStopsUntilResumedFromAnotherProcess() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let control = s.path("ctl")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Built.cli)
        process.arguments = ["run", "-c", Self.rules("break-before-data-write.cfg"), "-i", image, "--control", control,
                             "--library", Built.library, "--", qemuIO, "-f", "qcow2", "-c", "write -P 0xcc 0 64k", image]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let waited = try run(Built.cli, ["wait-break", "data", "--control", control, "--timeout", "30"])
        #expect(waited.status == 0 && waited.stdout.hasPrefix("stopped data \(process.processIdentifier) "), "\(waited)")
        // Stopped before the data write: the process waits, the pattern is not in the file.
        usleep(200_000)
        #expect(process.isRunning)
        let pattern = Data(repeating: 0xcc, count: 4096)
        #expect(try bytes(image).range(of: pattern) == nil)
        #expect(try run(Built.cli, ["resume", "nosuch", "--control", control]).status == 1)
        let resumed = try run(Built.cli, ["resume", "data", "--control", control])
        #expect(resumed.status == 0 && resumed.stdout.hasPrefix("resumed data"), "\(resumed)")
        let output = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(String(decoding: output, as: UTF8.self).contains("wrote 65536/65536 bytes at offset 0"))
        #expect(try bytes(image).range(of: pattern) != nil)
        #expect(try run(Built.cli, ["wait-break", "data", "--control", control, "--timeout", "0.2"]).status == 1)
    }

    // MARK: state shared by the processes of a run

    @Test func sharedStateSpansProcesses() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let script = "\(qemuIO) -f qcow2 -c 'write 0 4k' \(image); \(qemuIO) -f qcow2 -c 'read 0 4k' \(image)"
        func runBoth(_ extra: [String]) throws -> Outcome {
            try run(Built.cli, ["run", "-c", Self.rules("state-across-processes.cfg"), "-i", image, "--library", Built.library]
                    + extra + ["--", "/bin/bash", "-c", script])
        }
        let separate = try runBoth([])
        #expect(separate.stdout.contains("read 4096/4096 bytes at offset 0"), "\(separate)")
        let stateFile = s.path("state")
        let shared = try runBoth(["--shared-state", stateFile])
        #expect(shared.stdout.contains("wrote 4096/4096 bytes at offset 0"), "\(shared)")
        #expect(shared.stdout.contains("read failed: Input/output error"), "\(shared)")
        #expect(try bytes(stateFile) == Data([2, 0, 0, 0]))
    }
}
