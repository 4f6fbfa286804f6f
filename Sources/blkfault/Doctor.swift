import ArgumentParser
import Foundation

/// `blkfault doctor [--json] [--] CMD|BINARY [ARGS...]`
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Say whether blkfault can see a program's image I/O, and why not.",
        discussion: """
            Reads the program's ELF and the shared libraries the loader would load (DT_NEEDED through \
            DT_RPATH/DT_RUNPATH, LD_LIBRARY_PATH, /etc/ld.so.cache and the default directories) with libelf. \
            Verdicts: yes; yes, with these options (a QEMU tool whose aio options bypass libc, i.e. io_uring, \
            or linux-aio with BLKFAULT_AIO=report); partly (it imports ways around libc, e.g. io_uring, stdio, \
            sendfile, splice, POSIX AIO, that matter only if it uses them on the image); no (statically linked, no glibc, setuid/setgid, file capabilities). \
            The first line is the verdict; details follow. Exit status 0 whatever the verdict; 1 if CMD is \
            not found or unreadable.
            """
    )

    @Flag(help: "Print a JSON object instead of text.")
    var json = false

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The command and its arguments.", valueName: "CMD"))
    var command: [String] = []

    func run() throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw BlkfaultError.noCommand }
        let report: DoctorReport
        do { report = try Doctor.examine(argv) } catch let e as DoctorError {
            printError(e.description)
            throw ExitCode(1)
        }
        say(json ? DoctorOutput.json(report) : DoctorOutput.text(report))
    }
}

enum DoctorOutput {
    static func text(_ r: DoctorReport) -> String {
        var out = [r.line]
        out.append("program: \(r.program)" + (r.arguments.isEmpty ? "" : " " + r.arguments.joined(separator: " ")))
        for s in r.scripts { out.append("script: \(s)") }
        if let elf = r.elf {
            out.append("dynamic loader: " + (elf.interpreter ?? "none (statically linked)"))
        }
        if r.setuid || r.setgid || r.capabilities {
            out.append("secure mode: " + [r.setuid ? "setuid" : nil, r.setgid ? "setgid" : nil,
                                          r.capabilities ? "file capabilities" : nil].compactMap { $0 }.joined(separator: ", "))
        }
        if !r.libraries.isEmpty {
            out.append("libraries (\(r.libraries.count)): " + r.libraries.map { lib in
                lib.path == nil ? "\(lib.name) (NOT FOUND)" : (lib.path! as NSString).lastPathComponent
            }.joined(separator: ", "))
            out.append("libc: " + (r.dynamicLibc ?? "none"))
        }
        let labels: [(SymbolStanding, String)] = [
            (.hooked, "I/O calls imported that blkfault hooks (seen, traced, can fail)"),
            (.watched, "imported, watched (not seen; blkfault warns at run time if they touch an image)"),
            (.unseen, "imported, not seen by blkfault (I/O through them is invisible if used on the image)"),
        ]
        if !r.imports.isEmpty { out.append("(* imported by its libraries only; --json says which)") }
        for (standing, label) in labels {
            guard let symbols = r.imports[standing], !symbols.isEmpty else { continue }
            out.append(label + ":")
            // The program's own imports plain, its libraries' only with a *.
            out.append("  " + symbols.keys.sorted().map { name in
                symbols[name]!.contains(r.elf?.path ?? "") ? name : name + "*"
            }.joined(separator: " "))
        }
        if let tool = r.qemuTool {
            let modes = r.qemuAIO.map { "\($0.option)" }
            out.append("QEMU tool \(tool): aio options on the command line: " + (modes.isEmpty ? "none (aio=threads)" : modes.joined(separator: ", ")))
        }
        for o in r.options where r.verdict != .withOptions { out.append("with these options: \(o)") }
        for n in r.notes { out.append("note: \(n)") }
        return out.joined(separator: "\n")
    }

    static func json(_ r: DoctorReport) -> String {
        var o: [String: Any] = [
            "program": r.program,
            "arguments": r.arguments,
            "verdict": r.verdict.rawValue,
            "line": r.line,
            "reasons": r.reasons.filter { !$0.isEmpty },
            "options": r.options,
            "notes": r.notes,
            "static": r.staticallyLinked,
            "setuid": r.setuid,
            "setgid": r.setgid,
            "capabilities": r.capabilities,
        ]
        if !r.scripts.isEmpty { o["scripts"] = r.scripts }
        if let elf = r.elf { o["interpreter"] = elf.interpreter ?? NSNull() }
        o["libc"] = r.dynamicLibc ?? NSNull()
        o["libraries"] = r.libraries.map { lib -> [String: Any] in
            ["name": lib.name, "path": lib.path ?? NSNull(), "needed_by": lib.neededBy]
        }
        var imports: [String: Any] = [:]
        for standing in [SymbolStanding.hooked, .watched, .unseen] {
            imports[standing.rawValue] = (r.imports[standing] ?? [:]).mapValues { $0 }
        }
        o["imports"] = imports
        if let tool = r.qemuTool {
            o["qemu"] = ["tool": tool, "aio": r.qemuAIO.map { ["option": $0.option, "mode": $0.mode] }] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
