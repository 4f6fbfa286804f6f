import Foundation

/// A place a fault can go: the Nth time an event is raised (per process and image).
struct FaultPoint: Codable, Hashable {
    var event: String
    var occurrence: Int
    /// blkfault infers this event from QEMU 7.2's algorithm (see `blkfault events`).
    var inferred: Bool
}

/// What is done at a fault point.
enum FaultKind: Codable, Hashable {
    /// blkdebug's inject-error: fail with `errno`; once: only the first matching request.
    case error(errno: Int32, once: Bool)
    /// Power loss: SIGKILL before the request, with every write since the last flush undone.
    case crash

    var label: String {
        switch self {
        case .error(let e, let once): return "errno \(e), once \(once ? "on" : "off")"
        case .crash: return "power-loss crash"
        }
    }

    /// Short, file-name safe.
    var slug: String {
        switch self {
        case .error(let e, let once): return "e\(e)-\(once ? "once" : "always")"
        case .crash: return "crash"
        }
    }
}

/// One run of the command with exactly one fault.
struct SweepCase: Codable, Hashable {
    var point: FaultPoint
    var kind: FaultKind
    var id: String { "\(point.event).\(point.occurrence).\(kind.slug)" }
}

/// The variants of each point and how points become cases.
struct SweepPlan {
    var errnos: [Int32]
    var onceValues: [Bool]
    var crash: Bool

    var kinds: [FaultKind] {
        var out: [FaultKind] = []
        for e in errnos { for o in onceValues { out.append(.error(errno: e, once: o)) } }
        if crash { out.append(.crash) }
        return out
    }

    /// Every point reached in the traced run: for each event (in order of first raise), the
    /// occurrences 1...max over all processes and images, capped at `maxOccurrences` (0: no cap).
    static func points(from raises: [EventRaise], only events: Set<String>?, maxOccurrences: Int) -> [FaultPoint] {
        var out: [FaultPoint] = []
        for row in TraceFile.summary(raises) where events == nil || events!.contains(row.event) {
            let n = maxOccurrences > 0 ? min(row.maxOccurrence, maxOccurrences) : row.maxOccurrence
            for k in 1...max(1, n) { out.append(FaultPoint(event: row.event, occurrence: k, inferred: row.inferred)) }
        }
        return out
    }

    func cases(_ points: [FaultPoint]) -> [SweepCase] {
        points.flatMap { p in kinds.map { SweepCase(point: p, kind: $0) } }
    }
}

/// `--shard K/N`: case i belongs to shard (i mod N) + 1. Deterministic for one plan.
struct Shard: Codable, Equatable, CustomStringConvertible {
    var index: Int
    var count: Int

    init(index: Int, count: Int) { self.index = index; self.count = count }

    init?(_ text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, k >= 1, k <= n else { return nil }
        index = k; count = n
    }

    func contains(_ i: Int) -> Bool { i % count == index - 1 }
    var description: String { "\(index)/\(count)" }
}
