import Testing
import BlkfaultEngine

/// `decide` (how the preload drives an image that nothing traces and no action rule
/// acts on) against `before` (the traced path): the same decisions, and engines left in
/// the same state, when `after` is called only where `decide` says it is needed.
@Suite struct DecideTests {
    let cluster: UInt64 = 1024

    /// One engine driven the traced way, one the untraced way, over the same I/O.
    struct Pair: ReplayPair {
        var traced: Replay
        var untraced: Replay
        var skippedAfters = 0

        init(_ file: MemoryImage, rules: String) throws {
            traced = try Replay(file, rules: rules)
            untraced = try Replay(file, rules: rules)
        }

        var reference: Replay { traced }

        mutating func open() {
            traced.open()
            untraced.open()
        }

        mutating func read(_ offset: UInt64, _ length: UInt64) {
            let expected = traced.read(offset, length).decision
            let (decision, needsAfter) = untraced.engine.decide(Operation(.read, offset: offset, length: length), file: untraced.file)
            #expect(decision == expected, "read \(offset)+\(length)")
            guard decision == .perform else { return }
            if needsAfter {
                let data = untraced.file.read(offset: offset, count: Int(length)) ?? []
                _ = untraced.engine.after(Operation(.read, offset: offset, data: data), succeeded: true, file: untraced.file)
            } else {
                skippedAfters += 1
            }
        }

        mutating func write(_ offset: UInt64, _ data: [UInt8]) {
            let expected = traced.write(offset, data).decision
            let op = Operation(.write, offset: offset, data: data)
            let (decision, needsAfter) = untraced.engine.decide(op, file: untraced.file)
            #expect(decision == expected, "write \(offset)+\(data.count)")
            #expect(needsAfter, "a write always needs its after")
            guard decision == .perform else { return }
            untraced.file.write(offset: offset, data: data)
            _ = untraced.engine.after(op, succeeded: true, file: untraced.file)
        }

        mutating func flush() {
            let expected = traced.flush().decision
            let (decision, needsAfter) = untraced.engine.decide(Operation(.flush), file: untraced.file)
            #expect(decision == expected, "flush")
            #expect(!needsAfter, "a flush's after changes nothing")
        }

        /// The two engines answer the same to what comes next.
        func expectSameState(probes: [Operation]) {
            #expect(traced.engine.rules.state == untraced.engine.rules.state)
            #expect(traced.engine.rules.activeRules.lines == untraced.engine.rules.activeRules.lines)
            for op in probes {
                var a = traced.engine, b = untraced.engine
                let sa = a.before(op, file: traced.file), sb = b.before(op, file: untraced.file)
                #expect(sa.events == sb.events && sa.decision == sb.decision && sa.stateAfter == sb.stateAfter,
                        "probe \(op.kind.name) \(op.offset)+\(op.length)")
            }
        }
    }

    /// Allocation (notes §3.4 trace S1), then rewrites and reads of the data, an L2
    /// read, and a write that runs on into unallocated clusters.
    func drive(_ p: inout Pair) {
        p.allocate128DataClusters()
        for round in 0..<3 {
            p.read(68608, 1024)
            p.write(69632 + UInt64(round) * 4096, [UInt8](repeating: UInt8(round), count: 4096))
            p.flush()
            p.read(69632, 131072)
            p.read(69632 + 8192, 4096)
        }
        p.write(69632 + 131072 - 1024, [UInt8](repeating: 7, count: 4096))
        p.flush()
        p.read(69632 + 131072 - 1024, 1024)
    }

    var probes: [Operation] {
        [Operation(.read, offset: 69632, length: 4096), Operation(.write, offset: 69632, data: [UInt8](repeating: 9, count: 4096)),
         Operation(.read, offset: 68608, length: 1024), Operation(.flush)]
    }

    @Test(arguments: [
        // Never firing, on every request (scripts/bench's rules).
        "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n\n[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"4000000000000\"\n",
        // Fails the first data write, once.
        "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"136\"\nonce = \"on\"\n",
        // A state machine: an L2 load arms failing data reads (so none is performed);
        // a pretended success.
        "[set-state]\nevent = \"l2_load\"\nstate = \"1\"\nnew_state = \"2\"\n\n[inject-error]\nevent = \"read_aio\"\nstate = \"2\"\nerrno = \"5\"\n\n[inject-error]\nevent = \"l2_update\"\nerrno = \"-5\"\nonce = \"on\"\n",
        // The N-th raise only.
        "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\noccurrence = \"3\"\n",
    ])
    func decideAgreesWithBefore(rules: String) throws {
        var p = try Pair(freshQcow2(), rules: rules)
        drive(&p)
        p.expectSameState(probes: probes)
        // Performed reads of guest data skip their after (the state machine fails them all).
        #expect((p.skippedAfters > 0) == !rules.contains("[set-state]"))
    }

    @Test func afterIsNeededForMetadataReadsOnly() throws {
        var p = try Pair(freshQcow2(), rules: "")
        drive(&p)
        var engine = p.untraced.engine
        #expect(engine.decide(Operation(.read, offset: 68608, length: 1024), file: p.untraced.file).needsAfter)
        #expect(!engine.decide(Operation(.read, offset: 69632, length: 4096), file: p.untraced.file).needsAfter)
        #expect(engine.decide(Operation(.read, offset: 0, length: 112), file: p.untraced.file).needsAfter)
    }
}
