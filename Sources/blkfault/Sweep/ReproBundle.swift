import Foundation

/// OUT/repro/ID/: the rule file, repro.sh (setup, the one-line command, the check; exits with
/// the check's status) and the trace excerpt around the fault.
struct ReproBundle {
    var directory: String
    var command: String

    static func write(for c: SweepCase, rules: String, records: [TraceRecord], context: SweepContext) throws -> ReproBundle {
        let rel = "repro/" + c.id
        let dir = context.out + "/" + rel
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try rules.write(toFile: dir + "/rules.cfg", atomically: true, encoding: .utf8)

        var run = [Shell.quote(context.blkfault), "run", "--library", Shell.quote(context.library), "-c", "\"$here/rules.cfg\""]
        for g in context.globs { run += ["-i", Shell.quote(g)] }
        run += ["--"] + context.command.map(Shell.quote)
        let command = run.joined(separator: " ")

        var check: String
        if let custom = context.check {
            check = "sh -c \(Shell.quote(custom))"
        } else {
            let pattern = context.globs.isEmpty ? "*" : context.globs.joined(separator: " ")
            check = """
                rc=0
                for img in \(pattern); do
                    [ -f "$img" ] || continue
                    \(context.globs.isEmpty ? "head -c 4 \"$img\" | od -An -tx1 | grep -q '51 46 49 fb' || continue\n        " : "")qemu-img check "$img"; s=$?
                    if [ $s -ne 0 ] && { [ $rc -eq 0 ] || [ $rc -eq 3 ]; }; then rc=$s; fi
                done
                exit $rc
                """
        }
        let plain = SweepRules.isPlainBlkdebug(c)
        let script = """
            #!/bin/sh
            # blkfault sweep repro for case \(c.id): \(c.kind.label) at raise \(c.point.occurrence) of \(c.point.event).
            # Run it alone: sh repro.sh   (exit status: the check's; 2 = corruption, 3 = leaks).
            # rules.cfg is \(plain ? "plain blkdebug syntax: real QEMU accepts it too (blkdebug:rules.cfg:IMAGE)" : "blkfault's superset syntax (not accepted by real blkdebug)").
            here=$(cd "$(dirname "$0")" && pwd)
            work=$(mktemp -d "${TMPDIR:-/tmp}/blkfault-repro.XXXXXX")
            cd "$work" || exit 1
            echo "repro: working in $work" >&2
            \(context.setup.map { "sh -c \(Shell.quote($0)) || { echo 'repro: setup failed' >&2; exit 1; }" } ?? "# (no --setup)")
            \(command)
            echo "repro: target exit status $?" >&2
            \(check)

            """
        try script.write(toFile: dir + "/repro.sh", atomically: true, encoding: .utf8)
        chmod(dir + "/repro.sh", 0o755)

        // The trace around the first operation a rule acted on.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let around = records.firstIndex(where: \.acted).map { records[max(0, $0 - 5)..<min(records.count, $0 + 6)] }
            ?? records.suffix(10)
        let excerpt = around.map { String(decoding: (try? encoder.encode($0)) ?? Data(), as: UTF8.self) + "\n" }.joined()
        try excerpt.write(toFile: dir + "/trace-excerpt.jsonl", atomically: true, encoding: .utf8)
        return ReproBundle(directory: rel, command: command.replacingOccurrences(of: "\"$here/rules.cfg\"", with: rel + "/rules.cfg"))
    }
}

enum Shell {
    /// Single-quoted for sh, unless it needs no quoting.
    static func quote(_ s: String) -> String {
        let safe = s.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) }
        if safe && !s.isEmpty { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
