import Foundation
import Testing

/// `blkfault doctor` on real binaries, and `blkfault run` printing its verdict.
@Suite(.serialized) struct DoctorTests {
    static let head = "blkfault can see this program's image I/O: "

    struct Diagnosis {
        var text: Outcome
        var json: [String: Any]
        var firstLine: String { String(text.stdout.split(separator: "\n").first ?? "") }
        var verdict: String { json["verdict"] as? String ?? "" }
        func imports(_ standing: String) -> [String: [String]] {
            ((json["imports"] as? [String: Any])?[standing] as? [String: [String]]) ?? [:]
        }
    }

    func doctor(_ command: [String], env: [String: String] = [:]) throws -> Diagnosis {
        let text = try run(Built.cli, ["doctor", "--"] + command, env: env)
        #expect(text.status == 0, "\(text)")
        let json = try run(Built.cli, ["doctor", "--json", "--"] + command, env: env)
        #expect(json.status == 0, "\(json)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json)")
        // The text's first line and the JSON's line are the same verdict.
        #expect(text.stdout.hasPrefix(object["line"] as? String ?? "<none>"), "\(text)\n\(json)")
        return Diagnosis(text: text, json: object)
    }

    /// shim/hooks.def's exported names, read from the source: the doctor must agree with it.
    static var hookedNames: Set<String> {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let def = (try? String(contentsOf: root.appendingPathComponent("shim/hooks.def"), encoding: .utf8)) ?? ""
        var names = Set<String>()
        for line in def.split(separator: "\n") where line.hasPrefix("HOOK") {
            guard let open = line.firstIndex(of: "("), let comma = line.firstIndex(of: ",") else { continue }
            names.insert(line[line.index(after: open)..<comma].trimmingCharacters(in: .whitespaces))
        }
        return names
    }

    @Test func qemuImgIsDynamicAndSeen() throws {
        try requireTools()
        let d = try doctor([qemuImg, "info", "/tmp/x.qcow2"])
        #expect(d.firstLine == Self.head + "yes", "\(d.text)")
        #expect(d.verdict == "yes")
        #expect(d.json["static"] as? Bool == false)
        #expect((d.json["libc"] as? String)?.hasSuffix("/libc.so.6") == true, "\(d.json)")
        #expect((d.json["interpreter"] as? String)?.contains("ld-linux") == true, "\(d.json)")
        // The libraries are ld.so's: every one ldd names is found, at the same path.
        let ldd = try run("/usr/bin/ldd", [qemuImg])
        let libs = (d.json["libraries"] as? [[String: Any]]) ?? []
        for line in ldd.stdout.split(separator: "\n") where line.contains(" => ") {
            let parts = line.split(separator: " ")
            let name = String(parts[0].trimmingCharacters(in: .whitespaces))
            let path = String(parts[2])
            let mine = libs.first { $0["name"] as? String == name }
            #expect(mine?["path"] as? String == path, "\(name): ldd says \(path), doctor \(String(describing: mine))")
        }
        // qemu-img's own I/O calls are hooked, and hooks.def is where the list comes from.
        let hooked = d.imports("hooked")
        for name in ["pread64", "pwrite64", "preadv64", "pwritev64", "fdatasync", "open64"] {
            #expect(hooked[name]?.contains(qemuImg) == true, "\(name) not listed as hooked: \(hooked.keys.sorted())")
        }
        let fromDef = Self.hookedNames
        #expect(fromDef.count > 50)
        #expect(Set(hooked.keys).isSubset(of: fromDef), "\(Set(hooked.keys).subtracting(fromDef))")
        // Its ways around libc: watched (run-time warning) and unseen.
        #expect(d.imports("hooked")["io_submit"] != nil, "\(hooked.keys.sorted())")
        #expect(d.imports("watched")["io_uring_queue_init"] != nil, "\(d.imports("watched").keys.sorted())")
        #expect(d.imports("unseen")["io_uring_submit"] != nil, "\(d.imports("unseen").keys.sorted())")
        #expect(d.text.stdout.contains("aio=threads"), "\(d.text)")
    }

    @Test func staticProgramIsNo() throws {
        let s = try Scratch()
        let program = try CPrograms.build(s, "hello-static", CPrograms.hello, flags: ["-static"])
        let d = try doctor([program])
        #expect(d.firstLine.hasPrefix(Self.head + "no: "), "\(d.text)")
        #expect(d.firstLine.contains("statically linked"), "\(d.text)")
        #expect(d.verdict == "no")
        #expect(d.json["static"] as? Bool == true)
        // The same source linked dynamically: yes. The verdict comes from the linking.
        let dynamic = try CPrograms.build(s, "hello", CPrograms.hello)
        #expect(try doctor([dynamic]).verdict == "yes")
    }

    @Test(arguments: [(0o4755, "setuid"), (0o2755, "setgid")])
    func secureModeCopyIsNo(mode: Int, bit: String) throws {
        try requireTools()
        let s = try Scratch()
        let copy = try s.copy(qemuImg, to: "qemu-img")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy)
        #expect(try doctor([copy]).verdict == "yes", "the copy itself is fine")
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: copy)
        let d = try doctor([copy])
        #expect(d.firstLine.hasPrefix(Self.head + "no: "), "\(d.text)")
        #expect(d.firstLine.contains("it is \(bit)") && d.firstLine.contains("LD_PRELOAD"), "\(d.text)")
        #expect(d.json[bit] as? Bool == true)
    }

    @Test func fileCapabilitiesAreNo() throws {
        try requireTools()
        let s = try Scratch()
        let copy = try s.copy(qemuImg, to: "qemu-img")
        // security.capability v2 for cap_net_raw (bit 13) permitted: a minimal valid value.
        let value = "0000000200200000000000000000000000000000"
        let set = try run("/usr/bin/python3", ["-c", "import os, sys; os.setxattr(sys.argv[1], 'security.capability', bytes.fromhex(sys.argv[2]))",
                                                copy, value])
        guard set.status == 0 else { return } // no CAP_SETFCAP here, or the file system lacks xattrs
        let d = try doctor([copy])
        #expect(d.verdict == "no", "\(d.text)")
        #expect(d.firstLine.contains("file capabilities"), "\(d.text)")
    }

    /// io_uring goes around blkfault; so does linux-aio when the library only reports it
    /// (BLKFAULT_AIO=report).
    @Test(arguments: [
        (["-i", "io_uring"], "-i threads instead of -i io_uring", [:]),
        (["--image-opts", "driver=qcow2,file.driver=file,file.filename=x.qcow2,file.aio=io_uring"], "aio=threads instead of aio=io_uring", [:]),
        (["-i", "native", "-t", "none"], "-i threads instead of -i native", ["BLKFAULT_AIO": "report"]),
        (["--aio=native", "-t", "none"], "--aio=threads instead of --aio=native", ["BLKFAULT_AIO": "report"]),
    ] as [([String], String, [String: String])])
    func qemuIoAioOptionsNeedOtherOptions(options: [String], advice: String, env: [String: String]) throws {
        try requireTools()
        let d = try doctor([qemuIO] + options + ["-c", "read 0 4k", "x.qcow2"], env: env)
        #expect(d.firstLine.hasPrefix(Self.head + "yes, with these options: "), "\(d.text)")
        #expect(d.firstLine.contains(advice), "\(d.text)")
        #expect(d.verdict == "with-options")
    }

    /// linux-aio requests on an image are performed by blkfault itself (io_submit hook).
    @Test(arguments: [["-i", "native", "-t", "none"], ["--aio=native", "-t", "none"]])
    func qemuIoNativeIsYes(options: [String]) throws {
        try requireTools()
        let d = try doctor([qemuIO] + options + ["-c", "read 0 4k", "x.qcow2"])
        #expect(d.firstLine == Self.head + "yes", "\(d.text)")
        #expect(d.imports("hooked")["io_submit"] != nil, "\(d.imports("hooked").keys.sorted())")
        #expect(d.text.stdout.contains("blkfault performs each request on the image itself"), "\(d.text)")
    }

    @Test(arguments: [["-i", "threads"], ["-t", "none"], []])
    func qemuIoThreadsIsYes(options: [String]) throws {
        try requireTools()
        let d = try doctor([qemuIO] + options + ["-c", "read 0 4k", "x.qcow2"])
        #expect(d.firstLine == Self.head + "yes", "\(d.text)")
    }

    @Test func stdioProgramIsPartly() throws {
        let s = try Scratch()
        let program = try CPrograms.build(s, "stdio-copy", CPrograms.stdioCopy)
        let d = try doctor([program])
        #expect(d.verdict == "partly", "\(d.text)")
        #expect(d.firstLine.contains("fopen") && d.firstLine.contains("stdio"), "\(d.text)")
    }

    @Test func scriptIsJudgedByItsInterpreter() throws {
        let s = try Scratch()
        let script = try s.write("s.sh", "#!/bin/sh\necho hi\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        let d = try doctor([script])
        #expect(d.verdict == "yes", "\(d.text)")
        #expect((d.json["scripts"] as? [String]) == [script], "\(d.json)")
    }

    @Test func envScriptIsJudgedByTheProgramEnvRuns() throws {
        let s = try Scratch()
        let script = try s.write("s.sh", "#!/usr/bin/env sh\necho hi\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        let d = try doctor([script])
        let notes = (d.json["notes"] as? [String]) ?? []
        #expect(notes.contains { $0.hasPrefix("a script run by ") && $0.contains("sh:") && !$0.contains("/env") }, "\(notes)")
    }

    /// DT_RUNPATH/DT_RPATH with $ORIGIN, LD_LIBRARY_PATH and a missing library, against ld.so's own answer (ldd).
    @Test func librariesAreFoundWhereTheLoaderFindsThem() throws {
        let s = try Scratch()
        try FileManager.default.createDirectory(atPath: s.path("lib"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: s.path("elsewhere"), withIntermediateDirectories: true)
        let lib = try s.write("bf.c", "int bf(void) { return 7; }\n")
        let built = try run("/usr/bin/gcc", ["-shared", "-fPIC", "-Wl,-soname,libbf.so.1", "-o", s.path("lib/libbf.so.1"), lib])
        try #require(built.status == 0, "\(built)")
        let main = try s.write("main.c", "int bf(void);\nint main(void) { return bf() - 7; }\n")
        let linked = try run("/usr/bin/gcc", ["-o", s.path("prog"), main, s.path("lib/libbf.so.1"), "-Wl,-rpath,$ORIGIN/lib"])
        try #require(linked.status == 0, "\(linked)")
        func found(_ d: Diagnosis) -> String? {
            ((d.json["libraries"] as? [[String: Any]]) ?? []).first { $0["name"] as? String == "libbf.so.1" }?["path"] as? String
        }
        func ldd(_ program: String, env: [String: String] = [:]) throws -> String? {
            let r = try run("/usr/bin/ldd", [program], env: env)
            return r.stdout.split(separator: "\n").first { $0.contains("libbf.so.1 =>") }
                .map { String($0.split(separator: " ")[2]) }
        }
        let viaOrigin = try doctor([s.path("prog")])
        #expect(found(viaOrigin) == s.path("lib/libbf.so.1"), "\(viaOrigin.json)")
        #expect(try ldd(s.path("prog")) == found(viaOrigin))

        let moved = try s.copy(s.path("prog"), to: "elsewhere/prog")
        let viaPath = try doctor([moved], env: ["LD_LIBRARY_PATH": s.path("lib")])
        #expect(found(viaPath) == s.path("lib/libbf.so.1"), "\(viaPath.json)")
        #expect(try ldd(moved, env: ["LD_LIBRARY_PATH": s.path("lib")]) == found(viaPath))

        let missing = try doctor([moved])
        #expect(found(missing) == nil)
        #expect(((missing.json["notes"] as? [String]) ?? []).contains { $0.contains("libbf.so.1") && $0.contains("not found") }, "\(missing.json)")
    }

    /// libelf is the CLI's: the preloaded library must not bring it into every program.
    @Test func onlyTheCLILinksLibelf() throws {
        try requireTools()
        let library = try run("/usr/bin/ldd", [Built.library])
        #expect(library.status == 0 && !library.stdout.contains("libelf"), "\(library)")
        let cli = try run("/usr/bin/ldd", [Built.cli])
        #expect(cli.stdout.contains("libelf"), "\(cli)")
    }

    @Test func missingCommandExits1() throws {
        let r = try run(Built.cli, ["doctor", "--", "no-such-command-blkfault"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no-such-command-blkfault: command not found"), "\(r)")
    }

    // MARK: blkfault run

    @Test func runPrintsTheVerdictWhenNotAcleanYes() throws {
        try requireTools()
        let s = try Scratch()
        let image = try s.image("a.qcow2")
        let rules = try s.write("rules.cfg", BypassTests.rules)
        let uring = try run(Built.cli, ["run", "-c", rules, "-i", image, "--", "qemu-io", "-f", "qcow2", "-i", "io_uring", "-t", "none",
                                        "-c", "write 0 4k", image])
        let lines = uring.stderr.split(separator: "\n")
        #expect(lines.first?.hasPrefix(Self.head + "yes, with these options: -i threads instead of -i io_uring") == true, "\(uring)")

        let threads = try run(Built.cli, ["run", "-c", rules, "-i", image, "--", "qemu-io", "-f", "qcow2", "-c", "write 0 4k", image])
        #expect(!threads.stderr.contains(Self.head), "a clean yes prints nothing: \(threads)")
        #expect(threads.stdout.contains("write failed: Input/output error"), "\(threads)")

        let program = try CPrograms.build(s, "hello-static", CPrograms.hello, flags: ["-static"])
        let statik = try run(Built.cli, ["run", "-c", rules, "--", program])
        #expect(statik.stderr.hasPrefix(Self.head + "no: it is statically linked"), "\(statik)")
        #expect(statik.stdout == "hello\n", "the program still runs: \(statik)")
    }
}
