import CLibElf
import Foundation

/// Can blkfault see a program's image I/O?
enum DoctorVerdict: String {
    case yes
    /// Yes, if the program is run with other options (listed).
    case withOptions = "with-options"
    /// Yes for what goes through libc; not for ways around it that the program has, if it
    /// uses them on the image.
    case partly
    case no
}

/// `blkfault doctor`'s findings about one command line.
struct DoctorReport {
    var program: String
    var arguments: [String]
    /// A script's interpreter chain (#!), outermost first.
    var scripts: [String] = []
    var verdict: DoctorVerdict = .yes
    /// Why not a clean yes, each a short clause.
    var reasons: [String] = []
    /// For `withOptions`: what to run it with instead.
    var options: [String] = []
    var notes: [String] = []
    var elf: ELFFile?
    var staticallyLinked = false
    var dynamicLibc: String?
    var setuid = false
    var setgid = false
    var capabilities = false
    var libraries: [LoadedObject] = []
    /// symbol -> the objects importing it, by standing.
    var imports: [SymbolStanding: [String: [String]]] = [:]
    var qemuTool: String?
    /// QEMU aio modes chosen on the command line (option text -> mode).
    var qemuAIO: [(option: String, mode: String)] = []

    var line: String {
        let head = "blkfault can see this program's image I/O: "
        switch verdict {
        case .yes: return head + "yes"
        case .withOptions: return head + "yes, with these options: " + options.joined(separator: "; ")
        case .partly: return head + "partly: " + reasons.joined(separator: "; ")
        case .no: return head + "no: " + reasons.joined(separator: "; ")
        }
    }

    mutating func downgrade(to v: DoctorVerdict, _ reason: String) {
        let order: [DoctorVerdict] = [.yes, .withOptions, .partly, .no]
        if order.firstIndex(of: v)! > order.firstIndex(of: verdict)! { verdict = v; if v != .withOptions { reasons = [] } }
        if v == verdict && v != .withOptions { reasons.append(reason) }
    }
}

enum DoctorError: Error, CustomStringConvertible {
    case notFound(String)
    case unreadable(String)

    var description: String {
        switch self {
        case .notFound(let p): return "blkfault: \(p): command not found"
        case .unreadable(let m): return "blkfault: " + m
        }
    }
}

/// Builds the report: the file's mode and capabilities, its ELF, the libraries the
/// loader would load, their imports against shim/hooks.def, and QEMU's aio options.
enum Doctor {
    static func examine(_ command: [String], environment: [String: String] = ProcessInfo.processInfo.environment) throws -> DoctorReport {
        guard let name = command.first, let path = Paths.which(name) else { throw DoctorError.notFound(command.first ?? "") }
        var report = DoctorReport(program: Paths.absolute(path), arguments: Array(command.dropFirst()))
        var target = report.program
        // A script: the loader runs its interpreter (up to 4 levels, as the kernel does).
        for _ in 0..<4 {
            guard case (var interpreter, let argument)? = shebang(target) else { break }
            report.scripts.append(target)
            // `#!/usr/bin/env NAME`: env looks NAME up in PATH and runs it.
            if (interpreter as NSString).lastPathComponent == "env", let a = argument?.split(separator: " ").first(where: { !$0.hasPrefix("-") }) {
                interpreter = String(a)
            }
            guard let resolved = Paths.which(interpreter) else {
                report.downgrade(to: .no, "its interpreter \(interpreter) does not exist")
                return report
            }
            target = resolved
        }
        if !report.scripts.isEmpty { report.notes.append("a script run by \(target): these findings are about \(target)") }

        checkMode(target, &report)
        let elf: ELFFile
        do { elf = try ELFFile.read(target) } catch {
            if case .notELF = error { report.downgrade(to: .no, "\(target) is not an ELF executable"); return report }
            throw DoctorError.unreadable(error.description)
        }
        report.elf = elf
        if let own = ELFFile.kind(of: Paths.executable), own.elfClass != elf.elfClass || own.machine != elf.machine {
            report.downgrade(to: .no, "it is built for another machine or word size than libblkfault.so (ELF class \(elf.elfClass), machine \(elf.machine)), so the loader skips the library")
        }
        guard elf.interpreter != nil, elf.hasDynamic else {
            report.staticallyLinked = true
            report.downgrade(to: .no, "it is statically linked (no dynamic loader runs, so LD_PRELOAD is never read)")
            return report
        }
        var loader = Loader(environment: environment)
        loader.secure = report.setuid || report.setgid || report.capabilities
        report.libraries = loader.load(elf)
        for lib in report.libraries where lib.path == nil {
            report.notes.append("\(lib.name) (needed by \(lib.neededBy)) not found: the loader would refuse to start it")
        }
        report.dynamicLibc = report.libraries.first { ($0.elf?.soname ?? $0.name) == "libc.so.6" }?.path
        if report.dynamicLibc == nil {
            report.downgrade(to: .no, "it does not load glibc's libc.so.6 (libblkfault.so interposes glibc's calls and needs it)")
        }
        let aioReportOnly = HookTable.aioReportOnly(environment)
        classifyImports(elf, aioReportOnly: aioReportOnly, &report)
        qemuOptions(aioReportOnly: aioReportOnly, &report)
        return report
    }

    static func shebang(_ path: String) -> (String, String?)? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let d = try? h.read(upToCount: 256), d.starts(with: [0x23, 0x21]) else { return nil }
        let line = String(decoding: d.dropFirst(2).prefix { $0 != 0x0a }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
        guard let first = parts.first else { return nil }
        return (first, parts.count > 1 ? parts[1] : nil)
    }

    /// setuid/setgid bits and file capabilities: the kernel runs the program in secure
    /// mode (AT_SECURE) and ld.so then ignores LD_PRELOAD entries with a slash.
    static func checkMode(_ path: String, _ report: inout DoctorReport) {
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        report.setuid = st.st_mode & S_ISUID != 0
        // Without group execute, the setgid bit means mandatory locking, not a gid change.
        report.setgid = st.st_mode & S_ISGID != 0 && st.st_mode & S_IXGRP != 0
        report.capabilities = getxattr(path, "security.capability", nil, 0) > 0
        if report.setuid { report.downgrade(to: .no, "it is setuid (the loader ignores LD_PRELOAD in secure mode)") }
        if report.setgid { report.downgrade(to: .no, "it is setgid (the loader ignores LD_PRELOAD in secure mode)") }
        if report.capabilities {
            report.downgrade(to: .no, "it has file capabilities (security.capability; the loader ignores LD_PRELOAD in secure mode)")
        }
    }

    /// The program's and its libraries' imports, sorted by how blkfault stands to them.
    static func classifyImports(_ program: ELFFile, aioReportOnly: Bool, _ report: inout DoctorReport) {
        // libc and the loader implement these calls; libaio and liburing export them.
        let providers: Set<String> = ["libc.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libaio.so.1", "liburing.so.2"]
        var objects: [(String, ELFFile, Bool)] = [(program.path, program, true)]
        for lib in report.libraries {
            guard let elf = lib.elf, !providers.contains(elf.soname ?? lib.name) else { continue }
            objects.append((lib.path ?? lib.name, elf, false))
        }
        var mainUnseen: [BypassSymbol] = []
        var anyUnseen: [BypassSymbol] = []
        for (path, elf, isMain) in objects {
            for symbol in Set(elf.imports).sorted() {
                guard let standing = HookTable.standing(symbol, aioReportOnly: aioReportOnly) else { continue }
                report.imports[standing, default: [:]][symbol, default: []].append(path)
                if standing == .unseen, let b = HookTable.unseen(symbol) {
                    if !b.commonElsewhere { anyUnseen.append(b) } else if isMain { mainUnseen.append(b) }
                }
                if standing == .watched, symbol == "io_submit" || symbol.hasPrefix("io_uring_") {
                    anyUnseen.append(BypassSymbol(name: symbol, way: symbol == "io_submit" ? "linux-aio (BLKFAULT_AIO=report)" : "io_uring (liburing)",
                                                  commonElsewhere: false))
                }
            }
        }
        report.qemuTool = qemuTool(report.program, elf: program)
        // QEMU's block layer does image I/O with preadv/pwritev (aio=threads, the default)
        // unless told otherwise; its stdio and copy_file_range are for other files or go
        // through hooked calls. The options decide (qemuOptions).
        guard report.qemuTool == nil else { return }
        // stdio and mremap/msync are everywhere: they count only when the program itself
        // opens files with stdio and never with a hooked open (bash, python: both; a small
        // C tool that only knows fopen: its files are never seen, not even opened).
        let stdioOpens: Set<String> = ["fopen", "fopen64", "freopen", "freopen64", "fdopen"]
        let hookedOpens = program.imports.contains { HookTable.rows[$0].map { $0.hasPrefix("open") || $0 == "creat" } ?? false }
        if hookedOpens || !mainUnseen.contains(where: { stdioOpens.contains($0.name) }) { mainUnseen = [] }
        mainUnseen.removeAll { !$0.way.hasPrefix("stdio") }
        var ways: [String: [String]] = [:]
        for b in mainUnseen + anyUnseen where !(ways[b.way]?.contains(b.name) ?? false) { ways[b.way, default: []].append(b.name) }
        for (way, names) in ways.sorted(by: { $0.key < $1.key }) {
            report.downgrade(to: .partly, "not what it does through \(way): \(names.joined(separator: ", ")), if it uses that on the image")
        }
    }

    static func qemuTool(_ path: String, elf: ELFFile) -> String? {
        let base = (path as NSString).lastPathComponent
        let tools = ["qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon"]
        if tools.contains(base) || base.hasPrefix("qemu-system-") { return base }
        return nil
    }

    /// QEMU options that route image I/O around libc: qemu-io `-i MODE`/`--aio MODE`,
    /// qemu-nbd `--aio=MODE`, and `aio=MODE` in -drive/-blockdev/--image-opts strings and
    /// JSON filenames. MODE io_uring bypasses blkfault; native (linux-aio) does only with
    /// BLKFAULT_AIO=report (otherwise blkfault performs its requests); threads does not.
    static func qemuOptions(aioReportOnly: Bool, _ report: inout DoctorReport) {
        guard report.qemuTool != nil else { return }
        let args = report.arguments
        var chosen: [(String, String)] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { break }
            if a == "-i" || a == "--aio", i + 1 < args.count {
                chosen.append(("\(a) \(args[i + 1])", args[i + 1])); i += 2; continue
            }
            if a.hasPrefix("--aio=") { chosen.append((a, String(a.dropFirst(6)))) }
            else if a.hasPrefix("-i"), !a.hasPrefix("--"), a.count > 2, report.qemuTool == "qemu-io" {
                chosen.append((a, String(a.dropFirst(2))))
            }
            for mode in ["native", "io_uring", "threads"] {
                if a.contains("aio=\(mode)") { chosen.append(("aio=\(mode)", mode)) }
                if a.range(of: #""aio"\s*:\s*"\#(mode)""#, options: .regularExpression) != nil { chosen.append(("\"aio\": \"\(mode)\"", mode)) }
            }
            i += 1
        }
        report.qemuAIO = chosen
        var bad: [(String, String)] = []
        for (option, mode) in chosen where mode == "io_uring" || (mode == "native" && aioReportOnly) { bad.append((option, mode)) }
        if chosen.contains(where: { $0.1 == "native" }) && !aioReportOnly {
            report.notes.append("aio=native (linux-aio): blkfault performs each request on the image itself, synchronously, "
                + "when it is submitted, and queues its completion; the order in which concurrent requests complete can differ")
        }
        if bad.isEmpty {
            report.notes.append("QEMU does its image I/O through libc with aio=threads (the default; qemu-io -i threads), "
                + "and blkfault performs aio=native requests itself: blkfault sees both. aio=io_uring (-i io_uring) would bypass it")
            return
        }
        for (option, mode) in bad {
            let way = mode == "native" ? "linux-aio (io_submit)" : "io_uring"
            let replacement = option.replacingOccurrences(of: mode, with: "threads")
            report.options.append("\(replacement) instead of \(option) (\(way) goes around libc: blkfault would only warn)")
        }
        report.downgrade(to: .withOptions, "")
    }
}
