import Foundation

/// The progress line: a bar, counts by outcome, an ETA. Redrawn in place on a terminal;
/// elsewhere (CI logs) one line per tenth of the work.
final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private let total: Int
    private var done = 0
    private var counts: [Outcome: Int] = [:]
    private let started = Date()
    private let tty = isatty(STDERR_FILENO) == 1
    private var lastDecile = -1

    init(total: Int) { self.total = total }

    func record(_ o: Outcome) {
        lock.withLock {
            done += 1
            counts[o, default: 0] += 1
            draw()
        }
    }

    func finish() {
        lock.withLock { if tty { FileHandle.standardError.write(Data("\n".utf8)) } }
    }

    private func draw() {
        let width = 24
        let filled = total == 0 ? width : width * done / total
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let parts = Outcome.allCases.compactMap { o in counts[o].map { "\(o.short) \($0)" } }
        let elapsed = Date().timeIntervalSince(started)
        let eta = done == 0 ? "?" : Self.clock(elapsed / Double(done) * Double(total - done))
        let line = "[\(bar)] \(done)/\(total)  \(parts.joined(separator: " · "))  ETA \(eta)"
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        } else {
            let decile = total == 0 ? 10 : 10 * done / total
            if decile != lastDecile { lastDecile = decile; FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
