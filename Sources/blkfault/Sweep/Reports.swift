import Foundation

/// The terminal summary, --json, --junit.
enum Reports {
    static func table(_ results: [CaseResult]) -> String {
        let outcomes = Outcome.allCases
        var events: [String] = []
        var cells: [String: [Outcome: Int]] = [:]
        for r in results {
            if cells[r.event] == nil { events.append(r.event) }
            cells[r.event, default: [:]][r.outcome, default: 0] += 1
        }
        let w = max(6, events.map(\.count).max() ?? 0)
        var s = "event".padding(toLength: w, withPad: " ", startingAt: 0) + "  cases"
        for o in outcomes { s += "  " + o.short.leftPadded(max(5, o.short.count)) }
        s += "\n"
        func row(_ name: String, _ c: [Outcome: Int]) -> String {
            var line = name.padding(toLength: w, withPad: " ", startingAt: 0) + "  " + String(c.values.reduce(0, +)).leftPadded(5)
            for o in outcomes { line += "  " + String(c[o] ?? 0).leftPadded(max(5, o.short.count)) }
            return line + "\n"
        }
        for e in events { s += row(e, cells[e]!) }
        var all: [Outcome: Int] = [:]
        for r in results { all[r.outcome, default: 0] += 1 }
        s += row("all", all)
        let bad = results.filter { $0.outcome.needsALook }.sorted { ($0.outcome, $0.id) < ($1.outcome, $1.id) }
        if !bad.isEmpty {
            s += "\nNeeds a look (repro: OUT/<repro>/repro.sh):\n"
            for r in bad { s += "  \(r.outcome.rawValue): \(r.id)  -> \(r.repro ?? "-")\n" }
        }
        return s
    }

    struct JSONReport: Codable {
        var manifest: SweepManifest
        var counts: [String: Int]
        var cases: [CaseResult]
    }

    static func json(_ results: [CaseResult], manifest: SweepManifest) throws -> Data {
        var counts: [String: Int] = [:]
        for r in results { counts[r.outcome.rawValue, default: 0] += 1 }
        return try SweepStore.encoder.encode(JSONReport(manifest: manifest, counts: counts, cases: results))
    }

    /// Each case a test case; corruption, crash, hang and a failed check are failures.
    static func junit(_ results: [CaseResult]) -> String {
        let failures = results.filter { $0.outcome.isFailure }.count
        let time = results.map(\.seconds).reduce(0, +)
        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<testsuites tests=\"\(results.count)\" failures=\"\(failures)\" time=\"\(fmt(time))\">\n"
        s += "  <testsuite name=\"blkfault sweep\" tests=\"\(results.count)\" failures=\"\(failures)\" errors=\"0\" time=\"\(fmt(time))\">\n"
        for r in results {
            s += "    <testcase classname=\"blkfault.sweep.\(xml(r.event))\" name=\"\(xml(r.id))\" time=\"\(fmt(r.seconds))\">\n"
            if r.outcome.isFailure {
                s += "      <failure message=\"\(xml(r.outcome.rawValue)): \(xml(r.fault)) at raise \(r.occurrence) of \(xml(r.event))\" type=\"\(xml(r.outcome.rawValue))\">"
                s += xml("repro: \(r.repro ?? "-")\n\(r.reproCommand ?? "")\n--- check (\(r.check))\n\(r.checkOutput)") + "</failure>\n"
            }
            s += "      <system-out>" + xml("outcome: \(r.outcome.rawValue)\n--- rules\n\(r.rules)--- target (\(r.target))\n\(r.targetOutput)") + "</system-out>\n"
            s += "    </testcase>\n"
        }
        s += "  </testsuite>\n</testsuites>\n"
        return s
    }

    static func fmt(_ t: Double) -> String { String(format: "%.3f", t) }

    static func xml(_ s: String) -> String {
        var o = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "\n", "\t": o.unicodeScalars.append(u)
            default:
                if u.value < 0x20 || u.value == 0xFFFE || u.value == 0xFFFF { o += "?" } else { o.unicodeScalars.append(u) }
            }
        }
        return o
    }
}
