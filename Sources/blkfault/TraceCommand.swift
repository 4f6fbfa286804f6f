import ArgumentParser
import Foundation

/// `blkfault trace [-i GLOB]... [-o FILE] -- CMD...` and `blkfault trace --summary FILE`.
struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record every blkdebug event a command raises on its images (no fault injected).",
        discussion: """
            Runs CMD with libblkfault.so preloaded and no rules, then writes FILE: one JSON line per \
            event raised on a matched image, with its occurrence (1-based, counted per process and \
            image, as a blkdebug node counts), the operation (op, offset, length), pid, tid, image \
            and blkdebug state. `inferred: true` marks events QEMU raises without I/O of their own, \
            which blkfault infers from QEMU 7.2's algorithm. Prints the per-event summary at the end.

            `blkfault trace --summary FILE` prints the counts per event of an event file (or of a raw \
            BLKFAULT_TRACE file).

            Exit status: CMD's own (128+N if it died of signal N).
            """
    )

    @Option(name: [.customShort("i"), .customLong("image")],
            help: ArgumentHelp("Only images whose path matches GLOB (repeatable; default: every qcow2 file).", valueName: "GLOB"))
    var images: [String] = []

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("The event file to write.", valueName: "FILE"))
    var output: String = "blkfault-trace.jsonl"

    @Option(help: ArgumentHelp("Print the per-event counts of FILE and exit.", valueName: "FILE"))
    var summary: String?

    @Option(help: ArgumentHelp("The libblkfault.so to preload.", valueName: "PATH"))
    var library: String?

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The command and its arguments (after --).", valueName: "CMD"))
    var command: [String] = []

    func run() async throws {
        if let summary {
            printSummary(try TraceFile.loadRaises(at: summary))
            return
        }
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw BlkfaultError.noCommand }
        let lib = try Paths.library(option: library)
        let out = Paths.absolute(output)
        let raw = out + ".raw"
        try? FileManager.default.removeItem(atPath: raw)
        let end = try await Spawn.runInheritingStdio(argv, environment: [
            "LD_PRELOAD": Preloading.ldPreload(adding: lib),
            "BLKFAULT_TRACE": raw,
            "BLKFAULT_CONFIG": nil,
            "BLKFAULT_IMAGE": images.isEmpty ? nil : images.map(Paths.absolute).joined(separator: ":"),
        ])
        let raises = (try? TraceFile.raises(TraceFile.records(at: raw))) ?? []
        try TraceFile.jsonLines(raises).write(toFile: out, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(atPath: raw)
        printError("blkfault: \(raises.count) events recorded in \(out)")
        printSummary(raises, toStderr: true)
        switch end {
        case .exited(let c): throw ExitCode(c)
        case .signaled(let s): throw ExitCode(128 + s)
        default: throw ExitCode(1)
        }
    }

    private func printSummary(_ raises: [EventRaise], toStderr: Bool = false) {
        let rows = TraceFile.summary(raises)
        let width = max(5, rows.map(\.event.count).max() ?? 0)
        var lines = ["event".padding(toLength: width, withPad: " ", startingAt: 0) + "  raised  max occurrence"]
        for r in rows {
            lines.append(r.event.padding(toLength: width, withPad: " ", startingAt: 0)
                         + "  " + String(r.count).leftPadded(6) + "  " + String(r.maxOccurrence).leftPadded(14)
                         + (r.inferred ? "  (inferred)" : ""))
        }
        if rows.isEmpty { lines.append("(no events: did the command open a matching image?)") }
        for l in lines { if toStderr { printError(l) } else { say(l) } }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
