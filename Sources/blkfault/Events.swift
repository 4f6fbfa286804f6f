import ArgumentParser
import BlkfaultEngine
import Foundation

/// `blkfault events [--json]`: the blkdebug events and how blkfault recognises each.
struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List blkdebug's events and how blkfault recognises each one.",
        discussion: """
            exact: the I/O itself says what it is. inferred: QEMU raises it with no I/O of its own; \
            blkfault infers it from QEMU 7.2's behaviour. not yet: accepted in rule files, never raised. \
            never raised by QEMU 7.2: QEMU itself never raises it.
            """
    )

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Print a Markdown table (the one in README.md).")
    var markdown = false

    struct Row: Codable {
        let name: String
        let recognition: String
        let how: String
    }

    func run() throws {
        let rows = BlkdebugEvent.table.map { Row(name: $0.name, recognition: $0.recognition.rawValue, how: $0.howRecognised) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            say(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        if markdown {
            say("| event | recognition | how blkfault recognises it |")
            say("|---|---|---|")
            for r in rows { say("| `\(r.name)` | \(r.recognition) | \(r.how.replacingOccurrences(of: "|", with: "\\|")) |") }
            return
        }
        let nameWidth = rows.map(\.name.count).max() ?? 4
        let recWidth = rows.map(\.recognition.count).max() ?? 11
        say(pad("EVENT", nameWidth) + "  " + pad("RECOGNITION", recWidth) + "  HOW")
        for r in rows {
            say(pad(r.name, nameWidth) + "  " + pad(r.recognition, recWidth) + "  " + r.how)
        }
        var byKind: [String: Int] = [:]
        for r in rows { byKind[r.recognition, default: 0] += 1 }
        let order: [Recognition] = [.exact, .inferred, .notYet, .neverRaised]
        say()
        say("\(rows.count) events: " + order.map { "\(byKind[$0.rawValue] ?? 0) \($0.rawValue)" }.joined(separator: ", "))
    }
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

func padLeft(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}
