import ArgumentParser
import Dispatch
import Foundation

/// `blkfault sweep`: every fault point of a command, one fault per run, classified.
struct Sweep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command once per fault point it reaches, one fault each time, and classify the outcomes.",
        subcommands: [SweepRun.self, SweepMerge.self],
        defaultSubcommand: SweepRun.self
    )
}

/// Options for the reports both `sweep` and `sweep merge` write.
struct ReportOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Write the results as JSON.", valueName: "FILE"))
    var json: String?

    @Option(help: ArgumentHelp("Write a JUnit XML report (corruption, crash, hang, failed check are failures).", valueName: "FILE"))
    var junit: String?

    @Option(help: ArgumentHelp("Write a self-contained HTML report with a heatmap.", valueName: "FILE"))
    var html: String?

    func write(_ results: [CaseResult], manifest: SweepManifest) throws {
        if let json { try Reports.json(results, manifest: manifest).write(to: URL(fileURLWithPath: json)) }
        if let junit { try Reports.junit(results).write(toFile: junit, atomically: true, encoding: .utf8) }
        if let html { try HTMLReport.page(results, manifest: manifest).write(toFile: html, atomically: true, encoding: .utf8) }
    }
}

struct SweepRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Sweep every fault point of CMD (the default subcommand).",
        discussion: """
            1. --setup runs once (sh -c, in OUT/template) to make the files CMD works on.
            2. A traced run of CMD on a copy of them, with no fault, lists every (event, occurrence) \
            reached on the matched images (see `blkfault trace`).
            3. For each point and each variant (every --errno with once on and off; with --crash a \
            power-loss crash), CMD runs on a fresh copy with exactly that one fault, then the check \
            runs (default: `qemu-img check` on each matched image).
            4. Each case is classified: clean, error-reported-and-clean, leaks-only, corruption, \
            target-crashed (signal), target-hung (--timeout), check-failed, or fault-not-reached \
            (this run never got to the point the traced run reached).

            -i globs and the files of --setup are relative to the case's own directory: CMD, --setup and \
            --check run there. Cases that are not clean get a repro bundle in OUT/repro/ID (rules.cfg, \
            repro.sh, trace excerpt). Results are kept in OUT: a rerun with the same arguments resumes, \
            Ctrl-C stops cleanly. --shard K/N runs every Nth case; `blkfault sweep merge` joins shards.

            Exit status: 0 if no case is a failure (corruption, crash, hang, check failed), 1 if one is, \
            130 when interrupted.
            """
    )

    @Option(name: [.customShort("i"), .customLong("image")],
            help: ArgumentHelp("Images to fault: a glob relative to the case directory (repeatable; default: every qcow2 file).", valueName: "GLOB"))
    var images: [String] = []

    @Option(help: ArgumentHelp("Shell command that makes the files CMD needs, run once.", valueName: "CMD"))
    var setup: String?

    @Option(help: ArgumentHelp("Shell command run after each case; exit 0 clean, 2 corruption, 3 leaks, else failed (default: qemu-img check on each matched image).", valueName: "CMD"))
    var check: String?

    @Option(help: ArgumentHelp("errno values to inject, comma-separated.", valueName: "LIST"))
    var errno: String = "5"

    @Option(help: ArgumentHelp("once = on, off or both.", valueName: "on|off|both"))
    var once: String = "both"

    @Flag(help: "Also a power-loss crash at each point (SIGKILL, unsynced writes lost).")
    var crash = false

    @Option(help: ArgumentHelp("Only these events, comma-separated.", valueName: "LIST"))
    var events: String?

    @Option(help: ArgumentHelp("At most N occurrences per event (0: all).", valueName: "N"))
    var maxOccurrences: Int = 0

    @Option(name: [.customShort("j"), .customLong("jobs")], help: ArgumentHelp("Cases run in parallel.", valueName: "N"))
    var jobs: Int = 1

    @Option(help: ArgumentHelp("Run only the Kth of N deterministic slices.", valueName: "K/N"))
    var shard: String?

    @Option(help: ArgumentHelp("Seconds before a target (or check) is killed and counted as hung.", valueName: "S"))
    var timeout: Double = 60

    @Option(name: [.customShort("o"), .customLong("out")], help: ArgumentHelp("The sweep's directory (results, logs, repros).", valueName: "DIR"))
    var out: String = "blkfault-sweep"

    @Flag(help: "Keep each case's working files.")
    var keep = false

    @Option(help: ArgumentHelp("The libblkfault.so to preload.", valueName: "PATH"))
    var library: String?

    @OptionGroup var reports: ReportOptions

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The command and its arguments (after --).", valueName: "CMD"))
    var command: [String] = []

    func manifest(argv: [String]) throws -> SweepManifest {
        let errnos = try errno.split(separator: ",").map { part -> Int32 in
            guard let v = Int32(part.trimmingCharacters(in: .whitespaces)), v > 0 else {
                throw ValidationError("--errno: '\(part)' is not a positive errno number")
            }
            return v
        }
        let onceValues: [Bool]
        switch once {
        case "on": onceValues = [true]
        case "off": onceValues = [false]
        case "both": onceValues = [true, false]
        default: throw ValidationError("--once must be on, off or both, not '\(once)'")
        }
        let only = events?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return SweepManifest(command: argv, setup: setup, check: check, images: images, errnos: errnos,
                             once: onceValues, crash: crash, events: only, maxOccurrences: maxOccurrences,
                             timeout: timeout)
    }

    func run() async throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw BlkfaultError.noCommand }
        for g in images where g.hasPrefix("/") {
            throw ValidationError("-i \(g): globs are relative to each case's own directory (cases run on fresh copies of what --setup makes)")
        }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
        let shard = try self.shard.map { s -> Shard in
            guard let v = Shard(s) else { throw ValidationError("--shard must be K/N with 1 <= K <= N, not '\(s)'") }
            return v
        }
        let manifest = try manifest(argv: argv)
        let store = SweepStore(out: Paths.absolute(out))
        try store.prepare(manifest)
        let context = SweepContext(out: store.out, template: store.template, command: argv, globs: images,
                                   check: check, timeout: timeout, library: try Paths.library(option: library),
                                   blkfault: Paths.executable, setup: setup, keep: keep)
        // A sweep of a program blkfault cannot fully see would report "clean" for faults
        // that never reached it: say so first, as `blkfault run` does.
        if let report = try? Doctor.examine(argv), report.verdict != .yes {
            printError(report.line)
        }
        let interrupt = Interrupt.install()

        // 1-2: setup once, then the traced run that finds the fault points.
        let points: [FaultPoint]
        if let saved = store.savedPoints() {
            points = saved
        } else {
            try await makeTemplate(context)
            points = try await traceBaseline(context, manifest: manifest)
            try store.save(points: points)
        }
        let plan = SweepPlan(errnos: manifest.errnos, onceValues: manifest.once, crash: crash)
        let all = plan.cases(points)
        let mine = all.enumerated().filter { shard?.contains($0.offset) ?? true }.map(\.element)
        var results = store.results()
        let todo = mine.filter { results[$0.id] == nil }
        printError("blkfault sweep: \(points.count) fault points × \(plan.kinds.count) variants = \(all.count) cases"
                   + (shard.map { ", shard \($0): \(mine.count)" } ?? "")
                   + (todo.count < mine.count ? "; resuming: \(mine.count - todo.count) already done" : ""))

        // 3-4: the cases, `jobs` at a time.
        let progress = Progress(total: todo.count)
        let runner = CaseRunner(context: context)
        try await withThrowingTaskGroup(of: CaseResult?.self) { group in
            var next = todo.makeIterator()
            func launch() -> Bool {
                guard !interrupt.stopped, let c = next.next() else { return false }
                group.addTask { try await runner.run(c) }
                return true
            }
            for _ in 0..<jobs { if !launch() { break } }
            while let r = try await group.next() {
                if let r, !interrupt.stopped {
                    try store.save(r)
                    results[r.id] = r
                    progress.record(r.outcome)
                }
                _ = launch()
            }
        }
        progress.finish()

        let ordered = mine.compactMap { results[$0.id] }
        say(Reports.table(ordered))
        try reports.write(ordered, manifest: manifest)
        if interrupt.stopped {
            printError("blkfault sweep: interrupted; \(ordered.count) of \(mine.count) cases done. Run the same command again to resume.")
            throw ExitCode(130)
        }
        if ordered.contains(where: { $0.outcome.isFailure }) { throw ExitCode(1) }
    }

    private func makeTemplate(_ context: SweepContext) async throws {
        try? FileManager.default.removeItem(atPath: context.template)
        try FileManager.default.createDirectory(atPath: context.template, withIntermediateDirectories: true)
        guard let setup else { return }
        let log = context.out + "/setup.log"
        try? FileManager.default.removeItem(atPath: log)
        let end = try await Spawn.shell(setup, in: context.template, stdout: log, stderr: log, timeout: timeout)
        guard end == .exited(0) else {
            throw BlkfaultError.sweep("--setup failed (\(end)); its output is in \(log):\n" + CaseRunner.read(log))
        }
    }

    /// The clean run: the fault points, and a warning if the command or check fails without a fault.
    private func traceBaseline(_ context: SweepContext, manifest: SweepManifest) async throws -> [FaultPoint] {
        let dir = context.out + "/baseline"
        try? FileManager.default.removeItem(atPath: dir)
        let work = dir + "/work"
        try await context.copyTemplate(to: work)
        let trace = dir + "/trace.jsonl"
        let log = dir + "/target.log"
        let end = try await Spawn.run(context.command, in: work,
                                      environment: context.environment(work: work, rules: nil, trace: trace),
                                      stdout: log, stderr: log, timeout: timeout)
        if end == .interrupted { throw ExitCode(130) }
        if end != .exited(0) {
            printError("blkfault sweep: warning: the command fails with no fault injected (\(end)); see \(log)")
        }
        let (checkEnd, verdict) = try await context.runCheck(work: work, log: dir + "/check.log")
        if verdict != .clean {
            printError("blkfault sweep: warning: with no fault injected the check says \(verdict.rawValue) (\(checkEnd)); see \(dir)/check.log")
        }
        let raises = TraceFile.raises((try? TraceFile.records(at: trace)) ?? [])
        try TraceFile.jsonLines(raises).write(toFile: dir + "/events.jsonl", atomically: true, encoding: .utf8)
        if raises.isEmpty {
            throw BlkfaultError.sweep("the command raised no event on a matched image (see \(log)); check -i and that CMD opens the images")
        }
        return SweepPlan.points(from: raises, only: manifest.events.map(Set.init), maxOccurrences: manifest.maxOccurrences)
    }
}

struct SweepMerge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Join the results of sweep shards (same arguments, different --shard) into one.",
        discussion: "Copies every shard's results and repro bundles into OUT and writes the reports over all of them."
    )

    @Argument(help: ArgumentHelp("The shards' --out directories.", valueName: "DIR"))
    var shards: [String]

    @Option(name: [.customShort("o"), .customLong("out")], help: ArgumentHelp("The merged sweep directory.", valueName: "DIR"))
    var out: String = "blkfault-sweep"

    @OptionGroup var reports: ReportOptions

    func run() async throws {
        guard let first = shards.first else { throw ValidationError("name at least one shard directory") }
        let manifest = try SweepStore(out: Paths.absolute(first)).manifest()
        let target = SweepStore(out: Paths.absolute(out))
        try target.prepare(manifest)
        var merged = target.results()
        var order: [FaultPoint] = target.savedPoints() ?? []
        for dir in shards {
            let store = SweepStore(out: Paths.absolute(dir))
            guard try store.manifest() == manifest else {
                throw BlkfaultError.sweep("\(dir) is a different sweep from \(first) (manifest.json differs)")
            }
            for p in store.savedPoints() ?? [] where !order.contains(p) { order.append(p) }
            for (id, r) in store.results() {
                if let have = merged[id], have.outcome != r.outcome {
                    printError("blkfault sweep merge: warning: \(id) is \(have.outcome.rawValue) in one shard and \(r.outcome.rawValue) in \(dir); keeping the first")
                    continue
                }
                merged[id] = r
                try target.save(r)
                if let repro = r.repro, store.out != target.out {
                    let to = target.out + "/" + repro
                    try? FileManager.default.removeItem(atPath: to)
                    try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                    try? FileManager.default.copyItem(atPath: store.out + "/" + repro, toPath: to)
                }
            }
        }
        try target.save(points: order)
        let plan = SweepPlan(errnos: manifest.errnos, onceValues: manifest.once, crash: manifest.crash)
        let ordered = plan.cases(order).compactMap { merged[$0.id] }
        say(Reports.table(ordered))
        try reports.write(ordered, manifest: manifest)
        if ordered.contains(where: { $0.outcome.isFailure }) { throw ExitCode(1) }
    }
}

/// Ctrl-C: the first stops launching cases and kills the running ones (their results are
/// dropped, so a rerun redoes them); the second exits at once.
final class Interrupt: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    /// Kept alive for the process's life: a released source stops delivering.
    private var sources: [DispatchSourceSignal] = []

    var stopped: Bool { lock.withLock { count > 0 } }

    static func install() -> Interrupt {
        let i = Interrupt()
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { i.fire() }
            s.resume()
            i.sources.append(s)
        }
        return i
    }

    private func fire() {
        let n = lock.withLock { count += 1; return count }
        if n == 1 {
            printError("\nblkfault sweep: interrupted: stopping the running cases (again to quit at once)")
            Spawn.running.interruptAll()
        } else {
            _exit(130)
        }
    }
}
