import Foundation
import Testing

/// Runs the built `blkfault` command-line tool. It and libblkfault.so sit next to the test
/// bundle (.build/<triple>/<config>/); BLKFAULT_BIN_DIR overrides that directory.
private enum CLI {
    static let binDir: URL = {
        if let dir = ProcessInfo.processInfo.environment["BLKFAULT_BIN_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }()

    /// SwiftPM names the binary after its product, `blkfault-cli` (the library product owns
    /// the name `blkfault`); the scripts link it as `blkfault`.
    static var executable: String {
        for name in ["blkfault", "blkfault-cli"] {
            let p = binDir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return binDir.appendingPathComponent("blkfault-cli").path
    }

    static var library: String { binDir.appendingPathComponent("libblkfault.so").path }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs `blkfault ARGS` (or any program when `program` is given) in `directory`.
    static func run(_ args: [String], in directory: URL, program: String? = nil,
                    environment: [String: String?] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program ?? executable)
        p.arguments = args
        p.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        for key in ["LD_PRELOAD", "BLKFAULT_CONFIG", "BLKFAULT_IMAGE", "BLKFAULT_TRACE", "BLKFAULT_MODEL", "BLKFAULT_LIBRARY", "BLKFAULT_ENGINE"] {
            env[key] = nil
        }
        for (k, v) in environment { env[k] = v }
        p.environment = env
        // Files, not pipes: no deadlock whatever the amount of output.
        let out = directory.appendingPathComponent(".stdout-\(UUID().uuidString)")
        let err = directory.appendingPathComponent(".stderr-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return Result(status: p.terminationStatus,
                      stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    static var haveQemu: Bool { which("qemu-img") != nil && which("qemu-io") != nil }

    static func tempDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("blkfault-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func write(_ text: String, to name: String, in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func qemu(_ tool: String, _ args: [String], in dir: URL) throws -> Result {
        try run(args, in: dir, program: which(tool) ?? "/usr/bin/\(tool)")
    }
}

/// QEMU 7.2's BlkdebugEvent names, in enum order (qapi/block-core.json).
private let qemuEventNames = [
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
    "read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
    "vmstate_load", "vmstate_save", "cow_read", "cow_write",
    "reftable_load", "reftable_grow", "reftable_update",
    "refblock_load", "refblock_update", "refblock_update_part", "refblock_alloc",
    "refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
    "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
    "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
    "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
]

private let seedRules = """
    [inject-error]
    event = "l2_alloc_write"
    errno = "5"
    once = "on"

    """

/// Line 4 names an event that does not exist.
private let badRules = """
    # a comment
    [inject-error]
    errno = "5"
    event = "l2_alloc_wrte"

    """

@Suite struct CLITests {
    @Test func binariesExist() {
        #expect(FileManager.default.isExecutableFile(atPath: CLI.executable), "no blkfault binary in \(CLI.binDir.path)")
        #expect(FileManager.default.fileExists(atPath: CLI.library), "no libblkfault.so in \(CLI.binDir.path)")
    }

    // MARK: validate

    @Test func validateOnABadFilePrintsFileLineAndExits1() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(badRules, to: "bad.conf", in: dir)
        let r = try CLI.run(["validate", "bad.conf"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("blkfault: bad.conf:4: "), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("invalid parameter value: l2_alloc_wrte"))
    }

    @Test func validateOnAMissingFileExits1() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["validate", "missing.conf"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("blkfault: missing.conf"))
    }

    @Test func validateSummarisesEachRule() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let rules = seedRules + """
            [set-state]
            event = "l1_update"
            new_state = "2"

            [inject-error]
            event = "write_aio"
            state = "2"
            sector = "8"
            iotype = "write"

            """
        _ = try CLI.write(rules, to: "good.conf", in: dir)
        let r = try CLI.run(["validate", "good.conf"], in: dir)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("3 rules (2 inject-error, 1 set-state)"))
        #expect(r.stdout.contains("line 1: [inject-error]  event=l2_alloc_write state=any errno=5"))
        #expect(r.stdout.contains("once=on"))
        #expect(r.stdout.contains("line 5: [set-state]  event=l1_update state=any new_state=2"))
        #expect(r.stdout.contains("event=write_aio state=2"))
        #expect(r.stdout.contains("sector=8 (byte 4096)"))
        #expect(r.stdout.contains("iotype=write"))
    }

    // MARK: run

    @Test func runWithABadRuleFileNeverRunsTheCommand() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(badRules, to: "bad.conf", in: dir)
        let marker = dir.appendingPathComponent("marker")
        let r = try CLI.run(["run", "-c", "bad.conf", "--", "/bin/sh", "-c", "touch marker"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("blkfault: bad.conf:4: "), "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker.path))
        // The same command with a good rule file does run.
        _ = try CLI.write(seedRules, to: "good.conf", in: dir)
        let ok = try CLI.run(["run", "-c", "good.conf", "--", "/bin/sh", "-c", "touch marker"], in: dir)
        #expect(ok.status == 0, "stderr: \(ok.stderr)")
        #expect(FileManager.default.fileExists(atPath: marker.path))
    }

    @Test func runSetsTheEnvironmentWithAbsolutePaths() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(seedRules, to: "good.conf", in: dir)
        let r = try CLI.run(["run", "-c", "good.conf", "-i", "a.qcow2", "-i", "/x/*.qcow2", "--trace", "t.log",
                             "--", "/usr/bin/env"], in: dir, environment: ["BLKFAULT_IMAGE": "stale"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = Set(r.stdout.split(separator: "\n").map(String.init))
        let d = dir.path
        #expect(lines.contains("LD_PRELOAD=\(CLI.library)"))
        #expect(lines.contains("BLKFAULT_CONFIG=\(d)/good.conf"))
        #expect(lines.contains("BLKFAULT_IMAGE=\(d)/a.qcow2:/x/*.qcow2"))
        #expect(lines.contains("BLKFAULT_TRACE=\(d)/t.log"))

        // Without -i, BLKFAULT_IMAGE is removed; an existing LD_PRELOAD is kept after ours.
        let other = try CLI.run(["run", "-c", "good.conf", "--", "/usr/bin/env"], in: dir,
                                environment: ["BLKFAULT_IMAGE": "stale", "LD_PRELOAD": CLI.library])
        #expect(other.status == 0, "stderr: \(other.stderr)")
        let otherLines = other.stdout.split(separator: "\n").map(String.init)
        #expect(!otherLines.contains { $0.hasPrefix("BLKFAULT_IMAGE=") })
        #expect(otherLines.contains("LD_PRELOAD=\(CLI.library):\(CLI.library)"))
    }

    @Test func runReportsAMissingCommandWith127() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(seedRules, to: "good.conf", in: dir)
        let r = try CLI.run(["run", "-c", "good.conf", "--", "no-such-command-blkfault"], in: dir)
        #expect(r.status == 127)
        #expect(r.stderr == "blkfault: no-such-command-blkfault: command not found\n")
    }

    @Test func runReportsAMissingLibrary() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(seedRules, to: "good.conf", in: dir)
        let r = try CLI.run(["run", "-c", "good.conf", "--library", "nope.so", "--", "/bin/true"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("blkfault: \(dir.path)/nope.so (from --library): no such file"))
    }

    /// A libblkfault.so copied without its engine would stop the program at its first image:
    /// run says so before starting it.
    @Test func runReportsALibraryWithoutItsEngine() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(seedRules, to: "good.conf", in: dir)
        try FileManager.default.copyItem(atPath: CLI.library, toPath: dir.appendingPathComponent("libblkfault.so").path)
        let r = try CLI.run(["run", "-c", "good.conf", "--library", "libblkfault.so", "--", "/bin/true"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("blkfault: \(dir.path)/libblkfault-engine.so not found: \(dir.path)/libblkfault.so loads it"), "\(r)")
        try FileManager.default.copyItem(atPath: CLI.binDir.appendingPathComponent("libblkfault-engine.so").path,
                                         toPath: dir.appendingPathComponent("libblkfault-engine.so").path)
        let ok = try CLI.run(["run", "-c", "good.conf", "--library", "libblkfault.so", "--", "/bin/true"], in: dir)
        #expect(ok.status == 0, "\(ok)")
    }

    @Test(.enabled(if: CLI.haveQemu, "needs qemu-utils"))
    func runInjectsTheSeedFaultIntoQemuIo() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(seedRules, to: "seed.conf", in: dir)
        #expect(try CLI.qemu("qemu-img", ["create", "-q", "-f", "qcow2", "t.qcow2", "64M"], in: dir).status == 0)
        let r = try CLI.run(["run", "-c", "seed.conf", "-i", "t.qcow2", "--", "qemu-io", "-c", "write 0 4k", "t.qcow2"], in: dir)
        #expect(r.stdout + r.stderr == "write failed: Input/output error\n")
        #expect(r.status == 1)
    }

    // MARK: events

    @Test func eventsListsEveryEvent() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try CLI.run(["events"], in: dir)
        #expect(text.status == 0)
        let firstWords = text.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        for name in qemuEventNames { #expect(firstWords.contains(name), "events does not list \(name)") }

        let json = try CLI.run(["events", "--json"], in: dir)
        #expect(json.status == 0)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(rows.compactMap { $0["name"] as? String } == qemuEventNames)
        let allowed: Set<String> = ["exact", "inferred", "not yet", "never raised by QEMU 7.2"]
        for row in rows {
            #expect(allowed.contains(row["recognition"] as? String ?? ""), "\(row)")
            #expect(!(row["how"] as? String ?? "").isEmpty)
        }
    }

    @Test func readmeEventTableIsCurrent() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let begin = try #require(readme.range(of: "<!-- events:begin"))
        let afterBegin = try #require(readme.range(of: "-->\n", range: begin.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "<!-- events:end -->", range: afterBegin.upperBound..<readme.endIndex))
        let table = String(readme[afterBegin.upperBound..<end.lowerBound])
        let r = try CLI.run(["events", "--markdown"], in: root)
        #expect(r.status == 0)
        #expect(table == r.stdout, "README.md's event table is stale: paste `blkfault events --markdown` between the events markers")
    }

    // MARK: map

    @Test(.enabled(if: CLI.haveQemu, "needs qemu-utils"))
    func mapShowsTablesThenL2AndDataAfterAWrite() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try CLI.qemu("qemu-img", ["create", "-q", "-f", "qcow2", "m.qcow2", "64M"], in: dir).status == 0)
        let fresh = try CLI.run(["map", "m.qcow2"], in: dir)
        #expect(fresh.status == 0, "stderr: \(fresh.stderr)")
        #expect(fresh.stdout.hasPrefix("m.qcow2: qcow2 version 3"))
        #expect(fresh.stdout.contains("cluster size      65536"))
        #expect(fresh.stdout.contains("virtual size      67108864"))
        for what in ["0x0         0x70        header", "refcount table", "refcount block (refcount table index 0)",
                     "0x30000     0x8         L1 table"] {
            #expect(fresh.stdout.contains(what), "missing \(what) in:\n\(fresh.stdout)")
        }
        #expect(!fresh.stdout.contains("L2 table ("))
        #expect(fresh.stdout.contains("0 free, 0 leaked"))
        #expect(fresh.stdout.contains("warnings: none"))

        let w = try CLI.qemu("qemu-io", ["-c", "write 0 4k", "m.qcow2"], in: dir)
        #expect(w.status == 0)
        let written = try CLI.run(["map", "m.qcow2"], in: dir)
        #expect(written.status == 0)
        #expect(written.stdout.contains("0x40000     0x10000     L2 table (L1 index 0)"), "\(written.stdout)")
        #expect(written.stdout.contains("0x50000     0x10000     data (guest 0x0), 1 cluster"), "\(written.stdout)")

        let json = try CLI.run(["map", "--json", "m.qcow2"], in: dir)
        #expect(json.status == 0)
        let root = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let header = try #require(root["header"] as? [String: Any])
        #expect(header["clusterSize"] as? Int == 65536)
        #expect(header["version"] as? Int == 3)
        let regions = try #require(root["regions"] as? [[String: Any]])
        let kinds = regions.compactMap { $0["kind"] as? String }
        #expect(kinds == ["header", "header extension", "refcount table", "refcount block", "L1 table", "L2 table", "data"])
        let l2 = try #require(regions.first { $0["kind"] as? String == "L2 table" })
        #expect(l2["l1Index"] as? Int == 0 && l2["offset"] as? Int == 0x40000)
        let data = try #require(regions.first { $0["kind"] as? String == "data" })
        #expect(data["guestOffset"] as? Int == 0 && data["length"] as? Int == 65536)
        let counts = try #require(root["counts"] as? [String: Any])
        #expect(counts["dataClusters"] as? Int == 1 && counts["leakedClusters"] as? Int == 0)
        #expect((root["warnings"] as? [Any])?.isEmpty == true)
    }

    @Test func mapOnANonQcow2FileNamesTheFile() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try CLI.write(String(repeating: "not an image\n", count: 100), to: "plain.txt", in: dir)
        let r = try CLI.run(["map", "plain.txt"], in: dir)
        #expect(r.status == 1)
        #expect(r.stderr == "blkfault: plain.txt: not a usable qcow2 image: no qcow2 magic\n")
        let missing = try CLI.run(["map", "missing.qcow2"], in: dir)
        #expect(missing.status == 1)
        #expect(missing.stderr.hasPrefix("blkfault: missing.qcow2: cannot open: No such file or directory"))
    }

    @Test(.enabled(if: CLI.haveQemu, "needs qemu-utils"))
    func mapOnATruncatedImageWarnsAndExits2() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try CLI.qemu("qemu-img", ["create", "-q", "-f", "qcow2", "t.qcow2", "64M"], in: dir).status == 0)
        #expect(try CLI.qemu("qemu-io", ["-c", "write 0 4k", "t.qcow2"], in: dir).status == 0)
        let url = dir.appendingPathComponent("t.qcow2")
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: 0x38000)   // cut inside the L1 cluster: the L2 table is gone
        try handle.close()
        let r = try CLI.run(["map", "t.qcow2"], in: dir)
        #expect(r.status == 2)
        #expect(r.stdout.contains("L2 table at 0x40000 lies past the end of the file"), "\(r.stdout)")
        #expect(r.stdout.hasPrefix("t.qcow2: qcow2 version 3"))
        let again = try FileHandle(forWritingTo: url)
        try again.truncate(atOffset: 50)
        try again.close()
        let tiny = try CLI.run(["map", "t.qcow2"], in: dir)
        #expect(tiny.status == 1)
        #expect(tiny.stderr == "blkfault: t.qcow2: not a usable qcow2 image: file too short for a qcow2 header (50 bytes)\n")
    }

    // MARK: demo

    @Test(.enabled(if: CLI.haveQemu, "needs qemu-utils"))
    func demoRunsAndAgreesWithBlkdebug() throws {
        let dir = try CLI.tempDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["demo", "--keep", "work"], in: dir)
        #expect(r.status == 0, "stdout:\n\(r.stdout)\nstderr:\n\(r.stderr)")
        #expect(r.stdout.contains("$ blkfault run -c demo.conf -i demo.qcow2 -- qemu-io -c 'write 0 4k' demo.qcow2\n  write failed: Input/output error"))
        #expect(r.stdout.contains("$ qemu-io -c 'write 0 4k' blkdebug:demo.conf:blkdebug.qcow2\n  write failed: Input/output error"))
        #expect(r.stdout.contains("blkfault and blkdebug agree."))
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("work/demo.qcow2").path))
    }
}
