import BlkfaultEngine
import Foundation

/// Everything a case needs to run, fixed for one sweep.
struct SweepContext: Sendable {
    var out: String
    var template: String
    var command: [String]
    /// -i globs, relative to a case's work directory; empty: every qcow2 file.
    var globs: [String]
    var check: String?
    var timeout: Double
    var library: String
    var blkfault: String
    var setup: String?
    var keep: Bool

    /// Cap on the outputs kept in results (the files in the case directory keep everything).
    static let outputLimit = 16 * 1024

    func caseDir(_ id: String) -> String { out + "/cases/" + id }

    func environment(work: String, rules: String?, trace: String) -> [String: String?] {
        [
            "LD_PRELOAD": Preloading.ldPreload(adding: library),
            "BLKFAULT_CONFIG": rules,
            "BLKFAULT_IMAGE": globs.isEmpty ? nil : globs.map { work + "/" + $0 }.joined(separator: ":"),
            "BLKFAULT_TRACE": trace,
        ]
    }

    /// Fresh copies of the files --setup made, sparse files kept sparse.
    func copyTemplate(to work: String) async throws {
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let end = try await Spawn.run(["cp", "-a", "--sparse=always", "--reflink=auto", template + "/.", work],
                                      in: out, stdout: nil, stderr: nil, timeout: nil)
        guard end == .exited(0) else { throw BlkfaultError.sweep("cannot copy \(template) to \(work): cp \(end)") }
    }

    /// The images the check looks at: files in `work` matching the globs (every qcow2 file without -i).
    func matchedImages(in work: String) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: work) else { return [] }
        var out: [String] = []
        for case let rel as String in walker {
            let path = work + "/" + rel
            guard Paths.isFile(path) else { continue }
            if globs.isEmpty {
                if Qcow2Magic.has(path) { out.append(path) }
            } else if globs.contains(where: { fnmatch(work + "/" + $0, path, 0) == 0 }) {
                out.append(path)
            }
        }
        return out.sorted()
    }

    /// Runs the check in `work`, output to `log`. The default: `qemu-img check` on each matched
    /// image, the worst status wins (corruption over leaks over clean; any other status: failed).
    func runCheck(work: String, log: String) async throws -> (ProcessEnd, CheckVerdict) {
        let env: [String: String?] = ["LD_PRELOAD": ProcessInfo.processInfo.environment["LD_PRELOAD"],
                                      "BLKFAULT_CONFIG": nil, "BLKFAULT_TRACE": nil, "BLKFAULT_IMAGE": nil]
        if let check {
            let end = try await Spawn.shell(check, in: work, environment: env, stdout: log, stderr: log, timeout: timeout)
            return (end, Classifier.verdict(checkStatus: end))
        }
        let images = matchedImages(in: work)
        if images.isEmpty {
            // E.g. qemu-img convert removes a target it failed to create: no image, no damage.
            try "blkfault: no matched image after the run (the command removed it or never made it): nothing to check\n".appendTo(log)
            return (.exited(0), .clean)
        }
        var worst: (ProcessEnd, CheckVerdict) = (.exited(0), .clean)
        for image in images {
            try "$ qemu-img check \(image.dropFirst(work.count + 1))\n".appendTo(log)
            let end = try await Spawn.run(["qemu-img", "check", image], in: work, environment: env,
                                          stdout: log, stderr: log, timeout: timeout)
            let v = Classifier.verdict(checkStatus: end)
            if rank(v) > rank(worst.1) { worst = (end, v) }
        }
        return worst
    }

    private func rank(_ v: CheckVerdict) -> Int {
        switch v { case .clean: return 0; case .leaks: return 1; case .corruption: return 2; case .failed: return 3 }
    }
}

/// Runs one case: fresh files, the command with one fault, the check, the verdict, the repro.
struct CaseRunner {
    let context: SweepContext

    /// nil when the sweep was interrupted while the case ran: it runs again on resume.
    func run(_ c: SweepCase) async throws -> CaseResult? {
        do {
            return try await runCase(c)
        } catch {
            if Spawn.running.interrupted { return nil }
            throw error
        }
    }

    private func runCase(_ c: SweepCase) async throws -> CaseResult? {
        let started = Date()
        let dir = context.caseDir(c.id)
        let work = dir + "/work"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try await context.copyTemplate(to: work)

        let rulesText = SweepRules.text(for: c)
        let rules = dir + "/rules.cfg"
        try rulesText.write(toFile: rules, atomically: true, encoding: .utf8)
        let trace = dir + "/trace.jsonl"
        let targetLog = dir + "/target.log"
        let target = try await Spawn.run(context.command, in: work,
                                         environment: context.environment(work: work, rules: rules, trace: trace),
                                         stdout: targetLog, stderr: targetLog, timeout: context.timeout)
        if target == .interrupted { return nil }
        let records = (try? TraceFile.records(at: trace)) ?? []
        let acted = records.filter(\.acted)

        let checkLog = dir + "/check.log"
        let (checkEnd, verdict) = try await context.runCheck(work: work, log: checkLog)
        if checkEnd == .interrupted { return nil }
        // A crash case is killed before the trace line of the fatal operation can be written.
        let fired = !acted.isEmpty || (c.kind == .crash && target == .signaled(SIGKILL))
        let outcome = Classifier.classify(kind: c.kind, target: target, fired: fired, check: verdict)

        var result = CaseResult(
            id: c.id, event: c.point.event, occurrence: c.point.occurrence, inferred: c.point.inferred,
            fault: c.kind.label, errno: nil, once: nil, crash: c.kind == .crash, outcome: outcome,
            target: target.description, check: checkEnd.description, actions: acted.count, rules: rulesText,
            targetOutput: Self.read(targetLog), checkOutput: Self.read(checkLog), repro: nil,
            reproCommand: nil, seconds: Date().timeIntervalSince(started))
        if case .error(let e, let once) = c.kind { result.errno = e; result.once = once }
        if outcome.needsRepro {
            let bundle = try ReproBundle.write(for: c, rules: rulesText, records: records, context: context)
            result.repro = bundle.directory
            result.reproCommand = bundle.command
        }
        if !context.keep { try? FileManager.default.removeItem(atPath: work) }
        return result
    }

    static func read(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        let text = String(decoding: data, as: UTF8.self)
        if text.utf8.count <= SweepContext.outputLimit { return text }
        return String(decoding: Array(text.utf8.prefix(SweepContext.outputLimit)), as: UTF8.self)
            + "\n[... cut at \(SweepContext.outputLimit) bytes: see \(path)]\n"
    }
}

enum Qcow2Magic {
    static func has(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let d = [UInt8]((try? h.read(upToCount: 4)) ?? Data())
        return d.count == 4 && d.reduce(0) { $0 << 8 | UInt32($1) } == Qcow2Header.magic
    }
}

extension String {
    func appendTo(_ path: String) throws {
        if let h = FileHandle(forWritingAtPath: path) {
            defer { try? h.close() }
            try h.seekToEnd()
            try h.write(contentsOf: Data(utf8))
        } else {
            try write(toFile: path, atomically: false, encoding: .utf8)
        }
    }
}
