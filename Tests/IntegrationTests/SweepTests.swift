import Foundation
import Testing

/// `blkfault trace` and `blkfault sweep` with real qemu-io / qemu-img.
@Suite(.serialized) struct SweepTests {
    /// 026's image for its "Errors while writing 128 kB" section: 1 GiB, 1 KiB clusters.
    static let setup026 = "qemu-img create -q -f qcow2 -o cluster_size=1024 t.qcow2 1G"
    /// What 026 runs ($QEMU_IO passes --cache writethrough).
    static let write128k = ["qemu-io", "--cache", "writethrough", "-c", "write 0 128k", "t.qcow2"]
    /// The events 026 tests with exactly that command on a fresh image (l2_load and l2_update
    /// need a first write, so they are not this command's faults).
    static let events026 = ["l1_update", "l2_alloc_write", "write_aio", "refblock_load",
                            "refblock_update_part", "refblock_alloc", "cluster_alloc"]

    struct Case {
        var outcome: String
        var target: String
        var check: String
        var repro: String?
        var rules: String
    }

    /// Runs `blkfault sweep ARGS`; returns the process outcome and the cases of its JSON report.
    func sweep(_ s: Scratch, out: String = "out", _ args: [String], command: [String]) throws -> (Outcome, [String: Case]) {
        let json = s.path(out + ".json")
        let r = try run(Built.cli, ["sweep", "-o", s.path(out), "--json", json] + args + ["--"] + command)
        return (r, try Self.cases(json))
    }

    static func cases(_ json: String) throws -> [String: Case] {
        let data = try Data(contentsOf: URL(fileURLWithPath: json))
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let list = try #require(obj["cases"] as? [[String: Any]])
        var out: [String: Case] = [:]
        for c in list {
            out[c["id"] as! String] = Case(outcome: c["outcome"] as! String, target: c["target"] as! String,
                                           check: c["check"] as! String,
                                           repro: c["repro"] as? String, rules: c["rules"] as! String)
        }
        return out
    }

    @Test func traceNumbersEachEventPerProcessAndImage() throws {
        try requireTools()
        let s = try Scratch()
        let img = try s.image("t.qcow2", size: "1G", clusterSize: 1024)
        let events = s.path("ev.jsonl")
        let r = try run(Built.cli, ["trace", "-i", img, "-o", events, "--", qemuIO, "-c", "write 0 128k", "-c", "write 1M 4k", img])
        #expect(r.status == 0, "\(r)")
        let lines = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n")
        let raises = try lines.map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        // Two writes to unallocated space: two guest data writes, numbered 1 and 2.
        let writes = raises.filter { $0["event"] as? String == "write_aio" }
        #expect(writes.compactMap { $0["occurrence"] as? Int } == [1, 2])
        #expect(writes.last?["offset"] as? Int != nil && writes.last?["op"] as? String == "write")
        #expect(raises.contains { $0["event"] as? String == "l1_update" })

        let summary = try run(Built.cli, ["trace", "--summary", events])
        #expect(summary.status == 0)
        let row = try #require(summary.stdout.split(separator: "\n").first { $0.hasPrefix("write_aio ") })
        #expect(row.split(separator: " ").map(String.init) == ["write_aio", "2", "2"])
    }

    /// The issue's yardstick: a sweep of `write 0 128k` finds every event iotest 026 tests for
    /// that command, and its verdicts agree with real blkdebug running 026's own rules (and with
    /// 026.out, when the notes are there).
    @Test func sweepOfA128kWriteAgreesWithIotest026() throws {
        try requireTools()
        let s = try Scratch()
        let (r, cases) = try sweep(s, ["--setup", Self.setup026, "-i", "t.qcow2", "--errno", "5,28", "-j", "2"],
                                   command: Self.write128k)
        #expect(r.status == 0, "\(r)")
        for e in Self.events026 {
            #expect(cases["\(e).1.e5-once"] != nil, "sweep did not find \(e)")
        }
        let expected026 = Self.verdicts026()
        var agree = 0, total = 0, agree026 = 0, total026 = 0
        for e in Self.events026 {
            for errno in ["5", "28"] {
                for once in ["on", "off"] {
                    let id = "\(e).1.e\(errno)-\(once == "on" ? "once" : "always")"
                    let c = try #require(cases[id], "no case \(id)")
                    let mine = Verdict(errorReported: c.target != "exit 0",
                                       corrupt: c.outcome == "corruption" || c.outcome == "check-failed")
                    let reference = try blkdebugVerdict(s, event: e, errno: errno, once: once)
                    total += 1
                    if mine == reference { agree += 1 } else { Issue.record("\(id): sweep \(mine) vs blkdebug \(reference)") }
                    if let v = expected026["\(e);\(errno);\(once)"] {
                        total026 += 1
                        if mine == v { agree026 += 1 } else { Issue.record("\(id): sweep \(mine) vs 026.out \(v)") }
                    }
                }
            }
        }
        #expect(total == 28 && agree == total)
        print("sweep vs real blkdebug (026's rules): \(agree)/\(total); vs 026.out: \(agree026)/\(total026)")

        // Every case's rule file is plain blkdebug: real blkdebug runs it, and gives the same
        // qemu-io exit status and the same qemu-img check status as the sweep recorded.
        var same = 0
        var differ: [String] = []
        for (id, c) in cases.sorted(by: { $0.key < $1.key }) {
            let img = s.path("replay.qcow2")
            try? FileManager.default.removeItem(atPath: img)
            _ = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", img, "1G"])
            let cfg = try s.write("replay.cfg", c.rules)
            let io = try run(qemuIO, ["--cache", "writethrough", "-c", "write 0 128k", "blkdebug:\(cfg):\(img)"])
            // Rejected files read "Invalid parameter ...", "There is no option group ...".
            #expect(!io.stderr.contains("Invalid parameter") && !io.stderr.contains("option group"),
                    "real blkdebug rejects \(id)'s rules: \(io.stderr)")
            let chk = try run(qemuImg, ["check", img])
            if "exit \(io.status)" == c.target && "exit \(chk.status)" == c.check { same += 1 } else {
                differ.append("\(id): sweep \(c.target)/check \(c.check), blkdebug exit \(io.status)/check exit \(chk.status)")
            }
        }
        print("sweep cases replayed under real blkdebug: \(same)/\(cases.count) identical\n" + differ.joined(separator: "\n"))
        #expect(differ.isEmpty)
    }

    struct Verdict: Equatable, CustomStringConvertible {
        var errorReported: Bool
        var corrupt: Bool
        var description: String { "(error reported: \(errorReported), corrupt: \(corrupt))" }
    }

    /// 026's case with real blkdebug: its rule (no state: any raise), the write, then the check
    /// with leaks ignored, as 026 does.
    func blkdebugVerdict(_ s: Scratch, event: String, errno: String, once: String) throws -> Verdict {
        let img = s.path("ref.qcow2")
        try? FileManager.default.removeItem(atPath: img)
        _ = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", img, "1G"])
        let cfg = try s.write("ref.cfg", "[inject-error]\nevent = \"\(event)\"\nerrno = \"\(errno)\"\nimmediately = \"off\"\nonce =\"\(once)\"\n")
        let io = try run(qemuIO, ["--cache", "writethrough", "-c", "write 0 128k", "blkdebug:\(cfg):\(img)"])
        let c = try run(qemuImg, ["check", img])
        return Verdict(errorReported: io.status != 0, corrupt: c.status != 0 && c.status != 3)
    }

    /// 026.out's blocks for `write` (not -b), keyed "event;errno;once". Empty without the notes.
    static func verdicts026() -> [String: Verdict] {
        let here = URL(fileURLWithPath: #filePath)
        let repo = here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = ProcessInfo.processInfo.environment["PARITY_026_OUT"]
            ?? repo.deletingLastPathComponent().appendingPathComponent("shared/notes/026.out").path
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var out: [String: Verdict] = [:]
        var key: String?
        var body: [String] = []
        func flush() {
            if let key { out[key] = Verdict(errorReported: body.contains { $0.contains("failed") },
                                           corrupt: body.contains { $0.contains("ERROR") || $0.contains("corrupt") }) }
            key = nil; body = []
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("Event: ") {
                flush()
                let f = line.dropFirst(7).split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
                if f.count == 5, f[4] == "write" {
                    key = "\(f[0]);\(f[1].dropFirst(7));\(f[3].dropFirst(6))"
                }
            } else if line.hasPrefix("Formatting") || line.hasPrefix("===") {
                flush()
            } else if key != nil {
                body.append(line)
            }
        }
        flush()
        return out
    }

    /// Each outcome kind, from real qemu-io runs with one l1_update fault; the command around
    /// qemu-io makes the outcome.
    @Test(arguments: [
        ("clean", "qemu-io -c 'write 0 4k' t.qcow2; exit 0", [String]()),
        ("error-reported-and-clean", "qemu-io -c 'write 0 4k' t.qcow2", []),
        ("leaks-only", "qemu-io -c 'write 0 4k' t.qcow2", ["--once", "off"]),
        // Zero the refcount of cluster 3 (the L1 table) behind QEMU's back: a real corruption.
        ("corruption", "qemu-io -c 'write 0 4k' t.qcow2; printf '\\0\\0' | dd of=t.qcow2 bs=1 seek=131078 conv=notrunc status=none", []),
        ("target-crashed", "qemu-io -c 'write 0 4k' t.qcow2; kill -SEGV $$", []),
        ("target-hung", "qemu-io -c 'write 0 4k' t.qcow2; sleep 60", ["--timeout", "3"]),
        ("check-failed", "qemu-io -c 'write 0 4k' t.qcow2", ["--check", "exit 7"]),
        // The traced run writes; every later run only reads: l1_update is never reached again.
        ("fault-not-reached", "if [ -e MARK ]; then qemu-io -c 'read 0 4k' t.qcow2; else touch MARK; qemu-io -c 'write 0 4k' t.qcow2; fi", []),
    ])
    func classifiesEachOutcome(expected: String, script: String, extra: [String]) throws {
        try requireTools()
        let s = try Scratch()
        var args = ["--setup", "qemu-img create -q -f qcow2 t.qcow2 64M", "-i", "t.qcow2", "--events", "l1_update",
                    "--errno", "5"]
        if !extra.contains("--once") { args += ["--once", "on"] }
        let junit = s.path("junit.xml")
        let (r, cases) = try sweep(s, args + extra + ["--junit", junit],
                                   command: ["sh", "-c", script.replacingOccurrences(of: "MARK", with: s.path("mark"))])
        let c = try #require(cases["l1_update.1.e5-\(extra.contains("off") ? "always" : "once")"], "\(r)")
        #expect(c.outcome == expected, "\(r)")
        let failure = ["corruption", "target-crashed", "target-hung", "check-failed"].contains(expected)
        #expect(r.status == (failure ? 1 : 0), "\(r)")
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains("<testcase classname=\"blkfault.sweep.l1_update\""))
        #expect(xml.contains("<failure message=\"\(expected):") == failure, "\(xml)")
        #expect(xml.contains("failures=\"\(failure ? 1 : 0)\""))
        if ["leaks-only", "corruption"].contains(expected) {
            // The bundle reproduces the verdict when run alone: repro.sh exits with the check's status.
            let repro = try #require(c.repro)
            let again = try run("/bin/sh", [s.path("out/" + repro + "/repro.sh")])
            #expect(again.status == (expected == "corruption" ? 2 : 3), "\(again)")
        }
    }

    /// The issue's CI case: qemu-img convert into a matched qcow2, with power-loss crashes at
    /// every point, two jobs; each corruption or failed check reproduces from its bundle alone.
    @Test func convertSweepWithCrashesRunsToTheEndAndItsReprosReproduce() throws {
        try requireTools()
        let s = try Scratch()
        let setup = "qemu-img create -q -f raw src.raw 8M && qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 3M 512k' -c 'write -P 3 7M 64k' src.raw"
        let started = Date()
        let (r, cases) = try sweep(s, ["--setup", setup, "-i", "dst.qcow2", "--crash", "--once", "on", "--jobs", "2", "--timeout", "60"],
                                   command: ["qemu-img", "convert", "-O", "qcow2", "src.raw", "dst.qcow2"])
        let seconds = Date().timeIntervalSince(started)
        #expect(r.status == 0 || r.status == 1, "\(r)")
        let crashes = cases.filter { $0.key.hasSuffix(".crash") }
        #expect(crashes.count > 20 && crashes.count * 2 == cases.count, "\(cases.count) cases")
        #expect(!cases.values.contains { $0.outcome == "target-hung" || $0.outcome == "target-crashed" })
        // A crash fired in each crash case: none is "not reached".
        #expect(!crashes.values.contains { $0.outcome == "fault-not-reached" })
        var reproduced = 0
        for (id, c) in cases.sorted(by: { $0.key < $1.key }) where ["corruption", "check-failed"].contains(c.outcome) {
            let repro = try #require(c.repro, "\(id) has no repro")
            let again = try run("/bin/sh", [s.path("out/" + repro + "/repro.sh")])
            #expect("exit \(again.status)" == c.check, "\(id): repro \(again) vs sweep's check \(c.check)")
            reproduced += 1
        }
        print("convert sweep with --crash: \(cases.count) cases in \(Int(seconds)) s; \(reproduced) corruption/check-failed repros rerun")
    }

    @Test func resumesAfterAnInterruption() throws {
        try requireTools()
        let s = try Scratch()
        let args = ["sweep", "--setup", Self.setup026, "-i", "t.qcow2", "--events", "l1_update,l2_alloc_write,write_aio,cluster_alloc",
                    "--max-occurrences", "1", "--once", "both"]
        let command = ["--", "sh", "-c", "sleep 0.4; qemu-io -c 'write 0 128k' t.qcow2"]
        let out = s.path("out")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Built.cli)
        p.arguments = args + ["-o", out] + command
        p.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        p.standardError = errors
        try p.run()
        // Interrupt once two cases are stored.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let done = (try? FileManager.default.contentsOfDirectory(atPath: out + "/results"))?.count ?? 0
            if done >= 2 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        p.interrupt()
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130, "\(said)")
        #expect(said.contains("Run the same command again to resume"), "\(said)")
        let partial = try FileManager.default.contentsOfDirectory(atPath: out + "/results").count
        #expect(partial >= 2 && partial < 8, "\(partial) results after the interrupt")

        let resumed = try run(Built.cli, args + ["-o", out, "--json", s.path("resumed.json")] + command)
        #expect(resumed.status == 0, "\(resumed)")
        #expect(resumed.stderr.contains("resuming: \(partial) already done"), "\(resumed)")
        let whole = try run(Built.cli, args + ["-o", s.path("whole"), "--json", s.path("whole.json")] + command)
        #expect(whole.status == 0)
        let a = try Self.cases(s.path("resumed.json")).mapValues(\.outcome)
        let b = try Self.cases(s.path("whole.json")).mapValues(\.outcome)
        #expect(a.count == 8 && a == b)
    }

    @Test func shardsMergeIntoTheUnshardedResult() throws {
        try requireTools()
        let s = try Scratch()
        let args = ["--setup", Self.setup026, "-i", "t.qcow2", "--errno", "5,28", "--max-occurrences", "2"]
        let (whole, all) = try sweep(s, out: "whole", args, command: Self.write128k)
        #expect(whole.status == 0, "\(whole)")
        var shardCases: [String: Case] = [:]
        for k in 1...3 {
            let (r, part) = try sweep(s, out: "shard\(k)", args + ["--shard", "\(k)/3"], command: Self.write128k)
            #expect(r.status == 0, "\(r)")
            #expect(part.count < all.count)
            for (id, c) in part { #expect(shardCases[id] == nil, "\(id) in two shards"); shardCases[id] = c }
        }
        let merged = try run(Built.cli, ["sweep", "merge", s.path("shard1"), s.path("shard2"), s.path("shard3"),
                                         "-o", s.path("merged"), "--json", s.path("merged.json")])
        #expect(merged.status == 0, "\(merged)")
        let m = try Self.cases(s.path("merged.json"))
        #expect(m.mapValues(\.outcome) == all.mapValues(\.outcome))
        #expect(m.count == all.count && all.count > 20)
    }

    @Test func refusesBadArguments() throws {
        let s = try Scratch()
        let abs = try run(Built.cli, ["sweep", "-o", s.path("o1"), "-i", "/tmp/x.qcow2", "--", "true"])
        #expect(abs.status != 0 && abs.stderr.contains("relative to each case's own directory"), "\(abs)")
        let shard = try run(Built.cli, ["sweep", "-o", s.path("o2"), "--shard", "3/2", "--", "true"])
        #expect(shard.status != 0 && shard.stderr.contains("--shard must be K/N"), "\(shard)")
        let setup = try run(Built.cli, ["sweep", "-o", s.path("o3"), "--setup", "echo broken >&2; exit 4", "--", "true"])
        #expect(setup.status == 1 && setup.stderr.contains("--setup failed (exit 4)") && setup.stderr.contains("broken"), "\(setup)")
        // Same directory, different sweep: refused rather than mixed.
        _ = try run(Built.cli, ["sweep", "-o", s.path("o4"), "--setup", "true", "--", "true"])
        let other = try run(Built.cli, ["sweep", "-o", s.path("o4"), "--setup", "true", "--errno", "28", "--", "true"])
        #expect(other.status == 1 && other.stderr.contains("holds a different sweep"), "\(other)")
    }

    /// io_uring goes around libc: the sweep says so before it starts (the doctor's verdict).
    @Test func sweepOfAProgramBlkfaultCannotSeeSaysSo() throws {
        try requireTools()
        let s = try Scratch()
        let r = try run(Built.cli, ["sweep", "-o", s.path("out"), "--setup", "qemu-img create -q -f qcow2 t.qcow2 64M",
                                    "-i", "t.qcow2", "--", "qemu-io", "-t", "none", "-i", "io_uring", "-c", "write 0 4k", "t.qcow2"])
        #expect(r.stderr.contains("blkfault can see this program's image I/O: yes, with these options"), "\(r)")
    }

    /// The HTML report in a real browser: the page draws its heatmap and a case's details from
    /// its embedded data, so the DOM after the scripts ran is what a user sees.
    @Test func htmlReportRendersInChromium() throws {
        try requireTools()
        let chromium = try #require(["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.fileExists(atPath: $0) },
                                    "chromium missing: scripts/test installs it")
        let s = try Scratch()
        let html = s.path("report.html")
        let r = try run(Built.cli, ["sweep", "-o", s.path("out"), "--setup", Self.setup026, "-i", "t.qcow2",
                                    "--html", html, "--", "qemu-io", "-c", "write 0 128k", "t.qcow2"])
        #expect(r.status == 0, "\(r)")
        let id = "l1_update.1.e5-always"
        let dom = try run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                                     "file://\(html)#case=\(id)"])
        #expect(dom.status == 0, "\(dom.stderr)")
        let page = dom.stdout
        // The heatmap: a row per event with one square per variant.
        #expect(page.contains("<th>l1_update</th>"))
        #expect(page.components(separatedBy: "class=\"point\"").count > 10)
        #expect(page.contains("title=\"\(id): leaks-only\""))
        // The selected case's details: its rule file, the target's and the check's output.
        #expect(page.contains("id=\"case-\(id)\""))
        #expect(page.contains("[inject-error]\nevent = \"l1_update\"\nerrno = \"5\"\nonce = \"off\""))
        #expect(page.contains("write failed: Input/output error"))
        #expect(page.contains("leaked clusters were found"))
    }
}
