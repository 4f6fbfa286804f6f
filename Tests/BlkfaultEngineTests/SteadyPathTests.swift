import Testing
import BlkfaultEngine

/// What the engine publishes for the preload's lock-free pre-filter (Steady.swift,
/// blkfault_steady.h): `steadyKinds`, its active rules and `wholeDataWord`. An engine
/// that skips every request the filter lets through must decide everything else as
/// one that classifies every request, and end in the same state.
@Suite struct SteadyPathTests {
    static let benchRules = "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n\n[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n"

    /// blkfault_steady_allows over what the engine publishes, with every cluster the
    /// engine calls whole data known (the filter learns a subset of them).
    static func skips(_ engine: ImageEngine, _ kind: OperationKind, _ offset: UInt64, _ length: UInt64) -> Bool {
        var rules: [(sector: Int64, iotypes: IOTypeMask)] = []
        let kinds = engine.steadyKinds { rules.append(($0, $1)); return rules.count <= 8 }
        guard kind == .read ? kinds.reads : kind == .write ? kinds.writes : false else { return false }
        let bits = UInt64(engine.clusterBits)
        let first = offset >> bits, last = kind == .write && length > 0 ? (offset + length - 1) >> bits : first
        for c in first...last where (engine.wholeDataWord(c >> 6) >> (c & 63)) & 1 == 0 { return false }
        let io: IOType = kind == .read ? .read : .write
        for rule in rules where rule.iotypes.contains(io) {
            let target = UInt64(bitPattern: rule.sector)
            if rule.sector == -1 || (length > 0 && target >= offset && target < offset + length) { return false }
        }
        return true
    }

    /// One engine decides every request; the other skips what the filter lets through.
    struct Pair: ReplayPair {
        var full: Replay
        var filtered: Replay
        var skipped = 0
        var failed = 0

        init(_ file: MemoryImage, rules: String) throws {
            full = try Replay(file, rules: rules)
            filtered = try Replay(file, rules: rules)
        }

        var reference: Replay { full }

        mutating func open() {
            full.open()
            filtered.open()
        }

        mutating func read(_ offset: UInt64, _ length: UInt64) {
            let expected = full.read(offset, length).decision
            if expected != .perform { failed += 1 }
            if SteadyPathTests.skips(filtered.engine, .read, offset, length) {
                #expect(expected == .perform, "skipped read \(offset)+\(length) was decided \(expected)")
                skipped += 1
                return
            }
            #expect(filtered.read(offset, length).decision == expected, "read \(offset)+\(length)")
        }

        mutating func write(_ offset: UInt64, _ data: [UInt8]) {
            let expected = full.write(offset, data).decision
            if expected != .perform { failed += 1 }
            if SteadyPathTests.skips(filtered.engine, .write, offset, UInt64(data.count)) {
                #expect(expected == .perform, "skipped write \(offset)+\(data.count) was decided \(expected)")
                filtered.file.write(offset: offset, data: data)
                skipped += 1
                return
            }
            #expect(filtered.write(offset, data).decision == expected, "write \(offset)+\(data.count)")
        }

        mutating func flush() {
            #expect(full.flush().decision == filtered.flush().decision, "flush")
        }

        func expectSameState() {
            #expect(full.engine.rules.state == filtered.engine.rules.state)
            #expect(full.engine.rules.activeRules.lines == filtered.engine.rules.activeRules.lines)
            let probes = [Operation(.read, offset: 69632, length: 4096), Operation(.write, offset: 69632, data: [UInt8](repeating: 9, count: 4096)),
                          Operation(.read, offset: 68608, length: 1024), Operation(.flush),
                          Operation(.write, offset: 69632 + 131072, data: [UInt8](repeating: 1, count: 1024))]
            for op in probes {
                var a = full.engine, b = filtered.engine
                let sa = a.before(op, file: full.file), sb = b.before(op, file: filtered.file)
                #expect(sa.events == sb.events && sa.decision == sb.decision && sa.stateAfter == sb.stateAfter,
                        "probe \(op.kind.name) \(op.offset)+\(op.length)")
            }
        }
    }

    /// An allocation, then reads and rewrites of its 128 data clusters (1 KiB clusters at
    /// 69632...), with flushes, an L2 read and a write running into a new cluster between.
    static func drive(_ p: inout Pair) {
        p.allocate128DataClusters()
        for round in 0..<3 {
            p.read(68608, 1024)
            for k in 0..<16 { p.read(69632 + UInt64(k * 512 + round * 97) % 131072 / 512 * 512, 512) }
            for k in 0..<16 { p.write(69632 + UInt64(k) * 2048, [UInt8](repeating: UInt8(round), count: 2048)) }
            for k in 0..<8 { p.read(69632 + UInt64(k) * 4096, 4096) }
            p.flush()
            for k in 0..<8 { p.write(69632 + UInt64(k) * 1024 + 512, [UInt8](repeating: 3, count: 512)) }
        }
        p.write(69632 + 131072 - 1024, [UInt8](repeating: 7, count: 4096))
        p.flush()
        p.read(69632 + 131072 - 1024, 1024)
    }

    @Test(arguments: [
        // scripts/bench's rules: checked on every request, never firing.
        (benchRules, true),
        // No rules.
        ("", true),
        // Fails the reads and writes covering byte 69632 + 8192 (sector 152), every time.
        ("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"152\"\n\n[inject-error]\nevent = \"write_aio\"\nerrno = \"28\"\nsector = \"152\"\n", true),
        // A state machine on read_aio itself: the first data read moves to state 2, which arms a rule.
        ("[set-state]\nevent = \"read_aio\"\nstate = \"1\"\nnew_state = \"2\"\n\n[inject-error]\nevent = \"read_aio\"\nstate = \"2\"\nerrno = \"5\"\nsector = \"160\"\n", true),
        // Reads and writes take turns replacing the active list; the data read after a flush fails once.
        ("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n\n[inject-error]\nevent = \"flush_to_disk\"\nerrno = \"5\"\nsector = \"136\"\niotype = \"read\"\nonce = \"on\"\n", true),
        // The N-th raise of read_aio: its raises are counted, so no read is skipped (writes are).
        ("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\noccurrence = \"20\"\n", true),
        // A rule that covers every request once active: nothing can be skipped.
        ("[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n\n[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n", false),
    ])
    func skippingChangesNothing(rules: String, skipsSome: Bool) throws {
        var p = try Pair(freshQcow2(), rules: rules)
        Self.drive(&p)
        p.expectSameState()
        #expect((p.skipped > 0) == skipsSome, "\(p.skipped) requests skipped")
        if rules.contains("sector = \"152\"") || rules.contains("sector = \"160\"") || rules.contains("occurrence") {
            #expect(p.failed > 0, "the rule fired")
        }
    }

    /// The trace's readiness: after QEMU's open, a guest data read repeated.
    func steadyEngine(_ rules: String) throws -> Replay {
        var r = try Replay(freshQcow2(), rules: rules)
        r.allocateDataClusters(4, readsRefblock: false)
        r.read(69632, 1024)
        return r
    }

    @Test func notBeforeTheImageIsOpened() throws {
        let r = try Replay(freshQcow2(), rules: Self.benchRules)
        let kinds = r.engine.steadyKinds { _, _ in true }
        #expect(!kinds.reads && !kinds.writes)
    }

    @Test func readsOnceSteadyWritesOnceAFlushIsPending() throws {
        var r = try steadyEngine(Self.benchRules)
        #expect(r.engine.steadyKinds { _, _ in true }.reads)
        // After a flush the next write starts the flush model's request: not skippable.
        #expect(!r.engine.steadyKinds { _, _ in true }.writes)
        r.write(69632, [UInt8](repeating: 1, count: 1024))
        #expect(r.engine.steadyKinds { _, _ in true }.writes)
        // Reads put read_aio's rule in the active list, writes write_aio's: each replaces the other's.
        #expect(!r.engine.steadyKinds { _, _ in true }.reads)
        r.read(69632, 1024)
        #expect(r.engine.steadyKinds { _, _ in true }.reads)
        r.flush()
        #expect(!r.engine.steadyKinds { _, _ in true }.writes)
    }

    @Test func activeRulesArePublishedWithTheirSectors() throws {
        let r = try steadyEngine(Self.benchRules)
        var seen: [(Int64, IOTypeMask)] = []
        _ = r.engine.steadyKinds { seen.append(($0, $1)); return true }
        #expect(seen.count == 1 && seen[0].0 == 4_000_000_000_000 * 512 && seen[0].1.contains(.read))
        // The filter has room for only so many: too many, nothing is skipped.
        let kinds = r.engine.steadyKinds { _, _ in false }
        #expect(!kinds.reads && !kinds.writes)
    }

    @Test func notWhileATraceOrActionCountsRaises() throws {
        // An action rule (blkfault's own) counts every raise: the engine never claims steadiness.
        let r = try steadyEngine(Self.benchRules + "\n[crash]\nevent = \"l1_update\"\noccurrence = \"99\"\n")
        let kinds = r.engine.steadyKinds { _, _ in true }
        #expect(!kinds.reads && !kinds.writes)
    }

    @Test func setStateThatWouldChangeTheStateIsNotSkipped() throws {
        let rules = "[set-state]\nevent = \"read_aio\"\nstate = \"1\"\nnew_state = \"2\"\n\n[set-state]\nevent = \"read_aio\"\nstate = \"2\"\nnew_state = \"1\"\n"
        var r = try steadyEngine(rules)
        // Every read flips the state.
        #expect(!r.engine.steadyKinds { _, _ in true }.reads)
        r.read(69632, 1024)
        #expect(!r.engine.steadyKinds { _, _ in true }.reads)
    }

    @Test func onlyWholeDataClustersAreKnown() throws {
        var r = try steadyEngine(Self.benchRules)
        let word = r.engine.wholeDataWord(1)  // clusters 64...127
        #expect(word >> (68 - 64) & 1 == 1, "guest data")
        #expect(word >> (71 - 64) & 1 == 1, "guest data")
        #expect(word >> (67 - 64) & 1 == 0, "the L2 table")
        #expect(word >> (72 - 64) & 1 == 0, "not pointed to")
        let low = r.engine.wholeDataWord(0)
        #expect(low & 0b1111 == 0, "header, refcount table, refblock, L1 table")
        // A steady read leaves the layout alone; a discarded data cluster changes it
        // (more in SteadyLayoutTests).
        let version = r.engine.layoutVersion
        r.read(69632, 1024)
        #expect(r.engine.layoutVersion == version)
        let discard = Operation(.discard, offset: 69632, length: 1024)
        _ = r.engine.before(discard, file: r.file)
        _ = r.engine.after(discard, succeeded: true, file: r.file)
        #expect(r.engine.layoutVersion != version)
    }

    /// The classifier's after-call for a rewrite of known data changes no region: a
    /// layout change would empty the pre-filter's cluster bitmap at every such write.
    @Test func aRewriteOfKnownDataLeavesTheLayoutAlone() throws {
        var p = try Pair(freshQcow2(), rules: Self.benchRules)
        p.allocate128DataClusters()
        p.write(69632, [UInt8](repeating: 1, count: 1024))
        p.flush()
        let layout = p.full.engine.layoutVersion
        _ = p.full.write(69632 + 4096, [UInt8](repeating: 2, count: 1024))
        _ = p.full.read(69632 + 8192, 1024)
        #expect(p.full.engine.layoutVersion == layout)
    }
}
