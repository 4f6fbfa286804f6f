import Testing
import BlkfaultEngine

/// The walk path (`Qcow2Classifier.walkTableRead`, taken by `ImageEngine.decide` for a
/// read-only metadata walk's L2 table reads) against the general path: the same
/// decisions, the same after calls asked for, and engines that answer the same to what
/// comes next, over `qemu-img check`'s reads and what may follow them.
@Suite struct WalkPathTests {
    static let cluster = DeferredWalkTests.cluster

    enum Step { case read(UInt64, UInt64), write(UInt64, UInt64), becomeWritable }

    /// Each step's (decision, needsAfter), driven as the preload drives a quiet image, and
    /// the engine at the end.
    static func run(_ steps: [Step], walkPath: Bool, rules: String) throws -> ([String], ImageEngine, MemoryImage) {
        var file = DeferredWalkTests.image()
        var engine = ImageEngine(rules: try RuleFile.parse(Array(rules.utf8), fileName: "test.cfg"), file: file)
        engine.usesWalkPath = walkPath
        engine.noteOpen(writable: false)
        var log: [String] = []
        for step in steps {
            switch step {
            case .becomeWritable:
                engine.noteOpen(writable: true)
            case .read(let offset, let length):
                // With its buffer, as the preload's (what a read returns: the file's bytes).
                let op = Operation(.read, offset: offset, data: file.read(offset: offset, count: Int(length)) ?? [])
                let (decision, needsAfter) = engine.decide(op, file: file)
                log.append("read \(offset)+\(length): \(decision) \(needsAfter)")
                if decision == .perform && needsAfter { _ = engine.after(op, succeeded: true, file: file) }
            case .write(let offset, let length):
                let data = [UInt8](repeating: 0xa5, count: Int(length))
                let op = Operation(.write, offset: offset, data: data)
                let (decision, _) = engine.decide(op, file: file)
                log.append("write \(offset)+\(length): \(decision)")
                if decision == .perform {
                    file.write(offset: offset, data: data)
                    _ = engine.after(op, succeeded: true, file: file)
                }
            }
        }
        return (log, engine, file)
    }

    static func same(_ steps: [Step], rules: String = "") throws {
        let (walked, w, wf) = try run(steps, walkPath: true, rules: rules)
        let (general, g, gf) = try run(steps, walkPath: false, rules: rules)
        #expect(walked == general)
        #expect(w.steadyKinds { _, _ in true } == g.steadyKinds { _, _ in true })
        #expect(w.layoutVersion == g.layoutVersion)
        let c = cluster
        // What comes next: events and decisions of each probe, from copies of both engines.
        let probes = [Operation(.read, offset: 100 * c, length: c), Operation(.read, offset: 2 * c, length: c),
                      Operation(.read, offset: 205 * c, length: 512), Operation(.read, offset: 350 * c, length: 512),
                      Operation(.write, offset: 400 * c, data: [UInt8](repeating: 1, count: Int(c))),
                      Operation(.write, offset: 205 * c, data: [UInt8](repeating: 1, count: 512)), Operation(.flush)]
        for op in probes {
            var a = w, b = g
            let sa = a.before(op, file: wf), sb = b.before(op, file: gf)
            #expect(sa.events == sb.events && sa.decision == sb.decision, "probe \(op.kind.name) \(op.offset)+\(op.length)")
        }
    }

    static let walk: [Step] = DeferredWalkTests.walk.compactMap { (s: DeferredWalkTests.Step) -> Step? in
        if case .read(let o, let l) = s { return .read(o, l) }
        return nil
    }

    @Test func theWalk() throws {
        try Self.same(Self.walk)
        try Self.same(Self.walk + Self.walk.suffix(5))
    }

    @Test func dataAfterTheWalk() throws {
        let c = Self.cluster
        try Self.same(Self.walk + [.read(205 * c, 512), .read(100 * c, c), .read(350 * c, 512)])
    }

    @Test func writableAfterTheWalk() throws {
        let c = Self.cluster
        try Self.same(Self.walk + [.becomeWritable, .write(400 * c, c), .write(205 * c, 512), .read(2 * c, c)])
        try Self.same(Self.walk + [.becomeWritable, .read(2 * c, c), .read(100 * c, c), .write(401 * c, c)])
    }

    /// A rule on every data read (never firing: its sector is past the end) and one on
    /// l2_load: the walk path is taken only while no rule is active.
    @Test func withRules() throws {
        let c = Self.cluster
        let rules = """
            [inject-error]
            event = "read_aio"
            errno = "5"
            sector = "4000000000000"

            [inject-error]
            event = "l2_load"
            errno = "5"
            once = "on"
            """
        try Self.same(Self.walk + [.read(205 * c, 512)] + Self.walk.suffix(5), rules: rules)
    }

    /// In the walk, a table read is recorded beforehand and a refcount block read learns
    /// nothing: neither asks for its after call.
    @Test func walkReadsNeedNoAfter() throws {
        let c = Self.cluster
        let (log, _, _) = try Self.run(Self.walk, walkPath: true, rules: "")
        #expect(log[4] == "read \(100 * c)+\(c): perform false")
        #expect(log[5] == "read \(2 * c)+\(c): perform false")
    }
}
