/// Which qcow2 implementation's procedural events the engine models.
public enum ModelChoice: String, Sendable {
    /// QEMU 7.2's allocator, caches and flush order (the default).
    case qemu72 = "qemu-7.2"
    /// Only events the I/O itself proves; no procedural inference.
    case rawOnly = "raw"
}

/// What the engine did with one operation: the trace line's content.
public struct Step: Sendable {
    public var events: [BlkdebugEvent] = []
    public var stateBefore: Int32 = 1
    public var stateAfter: Int32 = 1
    public var decision: Decision = .perform
    /// The rule file line of the rule that failed the request.
    public var ruleLine: Int?
    /// Events raised after the request (pwritev_done).
    public var eventsAfter: [BlkdebugEvent] = []
    /// The raise (and seed) that activated the [inject-error] rule that decided.
    public var ruleChoice: Choice?
    /// blkfault's actions on this request.
    public var effects = Effects()
}

/// One blkdebug node's worth of state for one image: the rules, and the
/// classifier that says which events each I/O carries. A pure state machine:
/// `(operation) -> decision`, driven by the preload or by a test.
public struct ImageEngine: Sendable {
    public private(set) var rules: BlkdebugRules
    public private(set) var actions: ActionRules
    private var model: Model
    /// Why the image is followed in raw mode, if it is.
    public private(set) var rawReason: String?
    /// The file says it is qcow2 (magic) but its metadata cannot be modelled (damaged,
    /// truncated, hostile): followed in raw mode, and the user should be told once.
    public private(set) var degraded = false

    enum Model: Sendable {
        case qcow2(Qcow2Classifier)
        case raw(RawClassifier)
        /// Not a qcow2 image yet (e.g. being created): retried when the header is read.
        case pending(RawClassifier)
    }

    /// `seed`: the run's seed for rules with a probability and no seed of their own.
    public init(rules: RuleSet, file: ImageReader, model choice: ModelChoice = .qemu72, seed: UInt64 = 0) {
        self.rules = BlkdebugRules(rules, seed: seed)
        actions = ActionRules(rules.actionRules, seed: seed)
        if choice == .rawOnly {
            model = .raw(RawClassifier())
            rawReason = "raw model chosen"
            return
        }
        do {
            model = .qcow2(Qcow2Classifier(shadow: try ShadowImage(reading: file)))
        } catch {
            if file.size == 0 {
                model = .pending(RawClassifier())
            } else {
                model = .raw(RawClassifier())
                degraded = file.read(offset: 0, count: 4).map { $0.count == 4 && $0.be32(at: 0) == Qcow2Header.magic } ?? false
            }
            rawReason = error.description
        }
    }

    public var modelName: String {
        switch model {
        case .qcow2(let c): return c.modelName
        case .raw, .pending: return "raw"
        }
    }

    public var shadow: ShadowImage? {
        if case .qcow2(let c) = model { return c.shadow }
        return nil
    }

    /// blkfault: the state other processes of the run left (BLKFAULT_SHARED_STATE).
    public mutating func adoptState(_ state: Int32) { rules.adoptState(state) }

    /// The program opened the image (again); `writable` if for writing.
    public mutating func noteOpen(writable: Bool) {
        if case .qcow2(var c) = model { c.writable = c.writable || writable; model = .qcow2(c) }
    }

    /// Decides an operation before it reaches the file.
    public mutating func before(_ op: Operation, file: ImageReader) -> Step {
        retryQcow2IfPending(op, file: file)
        var step = Step()
        step.stateBefore = rules.state
        step.events = classifyBefore(op, file: file)
        var armed: [ActionRules.Armed] = []
        for e in step.events {
            let state = rules.state
            _ = rules.raise(e)
            if !actions.isEmpty { actions.raise(e, state: state, occurrence: rules.occurrences(of: e), into: &armed) }
        }
        step.stateAfter = rules.state
        if let iotype = op.kind.ioType,
           let hit = rules.check(offset: Int64(bitPattern: op.offset), bytes: Int64(bitPattern: op.length), iotype: iotype) {
            step.ruleLine = hit.line
            step.ruleChoice = hit.choice
            step.effects.delayNs = hit.delayNs
            step.decision = hit.errno == 0 ? .perform : hit.errno < 0 ? .pretendSuccess : .fail(errno: hit.errno)
        }
        rules.endRequest()
        if !actions.isEmpty {
            actions.apply(armed, to: op, decision: &step.decision, header: shadow?.header, effects: &step.effects)
            if case .torn(let keep, _, _) = step.decision { step.effects.lostL2Entries = lostL2Entries(op, keep: keep, file: file) }
        }
        switch step.decision {
        case .perform, .crash, .torn(_, .crash, _): return step
        case .fail, .pretendSuccess, .torn:
            // blkdebug failed the request: the block layer still finishes it.
            step.eventsAfter = classifyAfter(op, performed: false, succeeded: false, file: file)
            raiseAfter(step.eventsAfter)
            step.stateAfter = rules.state
            return step
        }
    }

    /// Takes in the outcome of a performed operation (for reads, what was read).
    public mutating func after(_ op: Operation, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        let events = classifyAfter(op, performed: true, succeeded: succeeded, file: file)
        raiseAfter(events)
        return events
    }

    private mutating func raiseAfter(_ events: [BlkdebugEvent]) {
        for e in events {
            let state = rules.state
            _ = rules.raise(e)
            if !actions.isEmpty { actions.raiseAfter(e, state: state, occurrence: rules.occurrences(of: e)) }
        }
    }

    private mutating func classifyBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2(var c): let e = c.eventsBefore(op, file: file); model = .qcow2(c); return e
        case .raw(var c): let e = c.eventsBefore(op, file: file); model = .raw(c); return e
        case .pending(var c): let e = c.eventsBefore(op, file: file); model = .pending(c); return e
        }
    }

    private mutating func classifyAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2(var c):
            let e = c.eventsAfter(op, performed: performed, succeeded: succeeded, file: file); model = .qcow2(c); return e
        case .raw(var c):
            let e = c.eventsAfter(op, performed: performed, succeeded: succeeded, file: file); model = .raw(c); return e
        case .pending(var c):
            let e = c.eventsAfter(op, performed: performed, succeeded: succeeded, file: file); model = .pending(c); return e
        }
    }

    /// The L2 entries of a torn write past the kept bytes that differ from the file.
    private func lostL2Entries(_ op: Operation, keep: UInt64, file: ImageReader) -> [LostL2Entry] {
        guard let shadow, let bytes = op.bytes, case .l2Table(let table, let l1Index) = shadow.region(at: op.offset) else { return [] }
        let width = shadow.header.l2EntrySize
        // The first entry not wholly kept.
        let first = (op.offset - table + keep) / width
        let last = (op.offset - table + op.length) / width
        guard first < last else { return [] }
        let start = table + first * width
        let written = bytes(Int(start - op.offset), Int((last - first) * width))
        let onDisk = file.read(offset: start, count: Int((last - first) * width)) ?? []
        var lost: [LostL2Entry] = []
        for k in 0..<Int(last - first) {
            let at = k * Int(width)
            guard at + 8 <= written.count else { break }
            let new = written.be64(at: at)
            let old = at + 8 <= onDisk.count ? onDisk.be64(at: at) : 0
            if new != old {
                let guest = l1Index * shadow.header.bytesPerL1Entry + (first + UInt64(k)) * shadow.clusterSize
                lost.append(LostL2Entry(guestOffset: guest, onDisk: old, written: new))
            }
        }
        return lost
    }

    /// An image created by the program becomes qcow2 once its header is on disk.
    private mutating func retryQcow2IfPending(_ op: Operation, file: ImageReader) {
        guard case .pending = model, op.kind == .read, op.offset == 0 else { return }
        if let shadow = try? ShadowImage(reading: file) {
            model = .qcow2(Qcow2Classifier(shadow: shadow))
            rawReason = nil
        }
    }
}
