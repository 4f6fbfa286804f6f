import BlkfaultEngine
import Foundation
import Synchronization

// Foundation has an Operation too.
public typealias EngineOp = BlkfaultEngine.Operation

/// An operation sequence recorded from a real QEMU run with BLKFAULT_TRACE, and the
/// image file as that run left it (scripts/bench-engine makes both in
/// $BLKFAULT_BENCH_DIR: trace.jsonl, image.qcow2, image.start.qcow2). Replayed against
/// the image as it was at the start; metadata bytes come from the final image.
public struct Recording: @unchecked Sendable {
    public var name: String
    public var start: MemoryImage
    public var ops: [EngineOp]

    public static func load() -> Recording {
        guard let dir = ProcessInfo.processInfo.environment["BLKFAULT_BENCH_DIR"] else {
            fatalError("BLKFAULT_BENCH_DIR is not set: run scripts/bench-engine, which records the sequence")
        }
        func bytes(_ name: String) -> [UInt8] {
            guard let d = FileManager.default.contents(atPath: dir + "/" + name) else { fatalError("\(dir)/\(name): cannot read") }
            return [UInt8](d)
        }
        let final = MemoryImage(bytes("image.qcow2"))
        let start = MemoryImage(bytes("image.start.qcow2"))
        let what = (try? String(contentsOfFile: dir + "/workload", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "a recorded run"
        var ops: [EngineOp] = []
        let text = String(decoding: bytes("trace.jsonl"), as: UTF8.self)
        for line in text.split(separator: "\n") {
            guard let kind = field(line, "op").flatMap(kindNamed), let offset = field(line, "offset").flatMap({ UInt64($0) }),
                  let length = field(line, "length").flatMap({ UInt64($0) }) else { continue }
            var op = EngineOp(kind, offset: offset, length: length)
            if kind == .read || kind == .write {
                op.bytes = { from, count in final.read(offset: offset + UInt64(from), count: count) ?? [] }
            }
            ops.append(op)
        }
        guard !ops.isEmpty else { fatalError("\(dir)/trace.jsonl: no operations") }
        return Recording(name: what, start: start, ops: ops)
    }

    /// The value of `"key":` in a JSON line (a string's contents or a number).
    private static func field(_ line: Substring, _ key: String) -> String? {
        guard let r = line.range(of: "\"\(key)\":") else { return nil }
        var rest = line[r.upperBound...]
        if rest.first == "\"" { rest = rest.dropFirst(); return String(rest.prefix { $0 != "\"" }) }
        return String(rest.prefix { $0.isNumber })
    }

    private static func kindNamed(_ name: String) -> OperationKind? {
        switch name {
        case "read": return .read
        case "write": return .write
        case "write-zeroes": return .writeZeroes
        case "discard": return .discard
        case "flush": return .flush
        case "truncate": return .truncate
        case "allocate": return .allocate
        default: return nil
        }
    }

    public func freshEngine() -> ImageEngine {
        var engine = ImageEngine(rules: RuleSet(), file: start)
        engine.noteOpen(writable: true)
        return engine
    }
}

/// Replays a sequence one operation per call, cyclically, as the preload drives the engine.
public final class Player: @unchecked Sendable {
    private var engine: ImageEngine
    private var ops: [EngineOp]
    private let file: MemoryImage
    private var next = 0

    public init(_ r: Recording) { engine = r.freshEngine(); ops = r.ops; file = r.start }

    /// Data reads and writes only, on an engine that has replayed the whole sequence.
    public static func steady(_ r: Recording) -> Player {
        let p = Player(r)
        for _ in r.ops { p.step() }
        let shadow = p.engine.shadow
        p.ops = r.ops.filter { ($0.kind == .read || $0.kind == .write) && shadow?.region(at: $0.offset) == .data }
        if p.ops.isEmpty { fatalError("the recorded sequence has no data reads or writes") }
        p.next = 0
        return p
    }

    /// Operations in one round.
    public var count: Int { ops.count }

    public func step() {
        let op = ops[next]
        next += 1
        if next == ops.count { next = 0 }
        let s = engine.before(op, file: file)
        if s.decision == .perform { sink(engine.after(op, succeeded: true, file: file)) }
    }

    /// `step` as the preload drives an untraced image without actions: `decide`, and
    /// `after` only when the engine says it needs it.
    public func stepUntraced() {
        let op = ops[next]
        next += 1
        if next == ops.count { next = 0 }
        let (decision, needsAfter) = engine.decide(op, file: file)
        if decision == .perform && needsAfter { sink(engine.after(op, succeeded: true, file: file)) }
    }
}

/// One engine behind its lock (LockedEngine, as Sources/BlkfaultPreload keeps each image), driven by threads.
public final class SharedEngine: @unchecked Sendable {
    let engine: LockedEngine
    let ops: [EngineOp]
    let file: MemoryImage

    public init(_ r: Recording) { engine = LockedEngine(r.freshEngine()); ops = r.ops; file = r.start }

    public func run(threads: Int, opsPerRun: Int) {
        let per = opsPerRun / threads
        let done = DispatchSemaphore(value: 0)
        for t in 0..<threads {
            let thread = Thread { [self] in
                var i = (t * 7919) % ops.count
                for _ in 0..<per {
                    let op = ops[i]
                    i += 1
                    if i == ops.count { i = 0 }
                    let d = engine.withLock { $0.before(op, file: file).decision }
                    if d == .perform { engine.withLock { sink($0.after(op, succeeded: true, file: file)) } }
                }
                done.signal()
            }
            thread.start()
        }
        for _ in 0..<threads { done.wait() }
    }
}

/// Keeps a result alive so the optimiser cannot drop the work that made it.
@inline(never) public func sink<T>(_ value: T) { withExtendedLifetime(value) {} }
