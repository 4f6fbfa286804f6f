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
    /// I/O on the overlay's backing file: events held until the overlay's next request
    /// shows where QEMU raised them (BackingReads.swift).
    public var held: [BlkdebugEvent] = []
    /// A `once` rule fired on a flush whose failure QEMU retries with nothing lost
    /// (`retriedFlush`): performed, the rule consumed.
    public var absorbed = false
}

/// One blkdebug node's worth of state for one image: the rules, and the
/// classifier that says which events each I/O carries. A pure state machine:
/// `(operation) -> decision`, driven by the preload or by a test.
public struct ImageEngine: Sendable {
    public private(set) var rules: BlkdebugRules
    public private(set) var actions: ActionRules
    private var model: Model
    /// The classifiers, outside the enum: one taken out of an enum payload to be
    /// mutated is a copy (every field retained, every set copied on first write).
    /// `qcow2` is a placeholder unless `model` is `.qcow2`. Not an Optional: reading the
    /// tag of an Optional of this struct copies all of it (~720 bytes) first.
    private var qcow2 = Qcow2Classifier(shadow: ShadowImage(empty: .placeholder))
    private var raw = RawClassifier()
    /// Why the image is followed in raw mode, if it is.
    public private(set) var rawReason: String?
    /// The file says it is qcow2 (magic) but its metadata cannot be modelled (damaged,
    /// truncated, hostile): followed in raw mode, and the user should be told once.
    public private(set) var degraded = false
    /// The overlay's backing file, once the program opened it (ImageEngine+Backing.swift).
    var backing: BackingReads?
    /// `backing != nil`, kept apart: testing the Optional copies the whole struct first.
    var followsBacking = false
    /// `pwritev_done` of guest data writes not raised yet (`holdsDone`).
    private var heldDone: [BlkdebugEvent] = []
    /// The last request decided was a guest data write (write_aio).
    private var lastWasGuestWrite = false
    /// The program's cache mode is writeback (ProgramCommand.writesBack).
    private var writesBack = false
    /// The program reads the backing chain itself, not through the overlay (qemu-img
    /// rebase; ProgramCommand.isQemuImgRebase): see followBacking.
    var readsBackingItself = false
    /// Bumped when the classifier is replaced (`layoutVersion`).
    private var layoutEpoch: UInt64 = 0
    /// QEMU's behaviour is modelled (not `BLKFAULT_MODEL=raw`): its file-posix probes too.
    private let modelsQemu: Bool
    /// Reads of file-posix's O_DIRECT alignment probe, passed through unseen.
    private var alignmentProbe = AlignmentProbe()

    enum Model: Sendable {
        /// `qcow2` holds the classifier.
        case qcow2
        case raw
        /// Not a qcow2 image yet (e.g. being created): retried when the header is read.
        case pending
    }

    /// `seed`: the run's seed for rules with a probability and no seed of their own.
    public init(rules: RuleSet, file: ImageReader, model choice: ModelChoice = .qemu72, seed: UInt64 = 0) {
        self.rules = BlkdebugRules(rules, seed: seed)
        actions = ActionRules(rules.actionRules, seed: seed)
        modelsQemu = choice == .qemu72
        if choice == .rawOnly {
            model = .raw
            rawReason = "raw model chosen"
            return
        }
        do {
            qcow2 = Qcow2Classifier(shadow: try ShadowImage(reading: file))
            model = .qcow2
        } catch {
            if file.size == 0 {
                model = .pending
            } else {
                model = .raw
                degraded = file.read(offset: 0, count: 4).map { $0.count == 4 && $0.be32(at: 0) == Qcow2Header.magic } ?? false
            }
            rawReason = error.description
        }
    }

    public var modelName: String {
        switch model {
        case .qcow2: return Qcow2Classifier.modelName // static: reading it copies no classifier out
        case .raw, .pending: return "raw"
        }
    }

    public var shadow: ShadowImage? {
        if case .qcow2 = model { return qcow2.shadow }
        return nil
    }

    /// blkfault: the state other processes of the run left (BLKFAULT_SHARED_STATE).
    public mutating func adoptState(_ state: Int32) { rules.adoptState(state) }

    /// What the program's command line implies (ProgramCommand): every such fact is taken
    /// here, once, when the image is attached; a new one is one line here or in
    /// Qcow2Classifier.noteCommand.
    public mutating func noteCommand(_ command: ProgramCommand) {
        writesBack = command.writesBack
        readsBackingItself = command.isQemuImgRebase
        if case .qcow2 = model { qcow2.noteCommand(command) }
    }

    /// The program opened the image (again); `writable` if for writing, `direct` if with
    /// O_DIRECT (its first reads may then be file-posix's alignment probe).
    public mutating func noteOpen(writable: Bool, direct: Bool = false) {
        if case .qcow2 = model { qcow2.writable = qcow2.writable || writable }
        if direct && modelsQemu { alignmentProbe.opened() }
    }

    /// Decides an operation before it reaches the file.
    public mutating func before(_ op: Operation, file: ImageReader) -> Step {
        var step = Step()
        step.stateBefore = rules.state
        if alignmentProbe.isActive, alignmentProbe.claims(op) { step.stateAfter = rules.state; return step }
        retryQcow2IfPending(op, file: file)
        step.events = classifyBefore(op, file: file)
        releaseHeldDone(unlessGuestWrite: step.events)
        if followsBacking { step.events = resolveBacking(op, step.events) }
        var armed: [ActionRules.Armed] = []
        for e in step.events {
            // An event no rule names changes nothing: skip building its outcome (actions
            // count every raise, so with actions every event is walked).
            guard actions.isEmpty else {
                let state = rules.state
                rules.fire(e)
                actions.raise(e, state: state, occurrence: rules.occurrences(of: e), into: &armed)
                continue
            }
            if rules.hasRules(for: e) { rules.fire(e) }
        }
        step.stateAfter = rules.state
        if let iotype = op.kind.ioType,
           let hit = rules.check(offset: Int64(bitPattern: op.offset), bytes: Int64(bitPattern: op.length), iotype: iotype) {
            step.ruleLine = hit.line
            step.ruleChoice = hit.choice
            step.effects.delayNs = hit.delayNs
            step.decision = hit.errno == 0 ? .perform : hit.errno < 0 ? .pretendSuccess : .fail(errno: hit.errno)
            if hit.errno != 0, retriedFlush(op, consumed: hit.consumed) { step.decision = .perform; step.absorbed = true }
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

    /// `before(op).decision` without the step: what the preload calls when nothing
    /// records the step (no trace) or acts on it (no action rules, no delay-ns), so the
    /// I/O path builds no event lists, outcomes or effects. The same state changes.
    /// `needsAfter`: whether `after(op)` could change anything once the request is
    /// performed: not for a flush, nor for a read the model learns nothing from (guest
    /// data, or a raw image); the preload then skips the after call.
    /// `Qcow2Classifier.usesWalkPath` (tests compare the walk path with the general one).
    public var usesWalkPath: Bool {
        get { qcow2.usesWalkPath }
        set { qcow2.usesWalkPath = newValue }
    }

    /// `Qcow2Classifier.usesSteadyPath` (tests compare the steady path with the general one).
    public var usesSteadyPath: Bool {
        get { qcow2.usesSteadyPath }
        set { qcow2.usesSteadyPath = newValue }
    }

    public mutating func decide(_ op: Operation, file: ImageReader) -> (decision: Decision, needsAfter: Bool) {
        // Its outcome ends a step of the probe.
        if alignmentProbe.isActive, alignmentProbe.claims(op) { return (.perform, true) }
        // A metadata walk's L2 table read (`qemu-img check`: ~20,000 at 20 GiB), classified
        // and recorded in one call: `decision` below with no events (none to fire, no held
        // pwritev_done to release, no active rule to check), then the table's record.
        if op.kind == .read, steadyPathOpen, !rules.hasActiveRules,
           let recorded = qcow2.walkTableReadRecorded(op, file: file) {
            lastWasGuestWrite = false
            rules.endRequest()
            return (.perform, !recorded)
        }
        let decision = decision(op, file: file)
        switch op.kind {
        case .flush, .stat: return (decision, false)
        case .read:
            guard case .qcow2 = model else { return (decision, false) }
            // A metadata walk's table read: recorded here, nothing left for after.
            if qcow2.lastReadIsMetadata, decision == .perform, qcow2.recordsWalkReadBeforehand(op, file: file) {
                return (decision, false)
            }
            // A read-only process's refcount block read: nothing to learn afterwards.
            if qcow2.lastReadIsMetadata, decision == .perform, qcow2.metadataReadLearnsNothing(op) { return (decision, false) }
            return (decision, qcow2.lastReadIsMetadata)
        default: return (decision, true)
        }
    }

    private mutating func decision(_ op: Operation, file: ImageReader) -> Decision {
        guard actions.isEmpty else { return before(op, file: file).decision }
        retryQcow2IfPending(op, file: file)
        var events = classifyBefore(op, file: file)
        releaseHeldDone(unlessGuestWrite: events)
        if followsBacking { events = resolveBacking(op, events) }
        for e in events where rules.hasRules(for: e) { rules.fire(e) }
        var decision = Decision.perform
        if rules.hasActiveRules, let iotype = op.kind.ioType,
           let hit = rules.check(offset: Int64(bitPattern: op.offset), bytes: Int64(bitPattern: op.length), iotype: iotype) {
            decision = hit.errno == 0 ? .perform : hit.errno < 0 ? .pretendSuccess : .fail(errno: hit.errno)
            if hit.errno != 0, retriedFlush(op, consumed: hit.consumed) { decision = .perform }
        }
        rules.endRequest()
        if decision != .perform {
            // blkdebug failed the request: the block layer still finishes it.
            raiseAfter(classifyAfter(op, performed: false, succeeded: false, file: file))
        }
        return decision
    }

    /// A `once` rule failing the close's dependency flush after `qemu-img check -r` or
    /// `amend`: blkdebug fails it above file-posix, bdrv_close ignores the error and
    /// qcow2_close flushes both caches again, so nothing shows. Failing the fdatasync
    /// would latch in file-posix and fail that retry too: the flush is performed and the
    /// rule counts as fired. (With once=off the rule stays active and fails the retry
    /// as under blkdebug.)
    private func retriedFlush(_ op: Operation, consumed: Bool) -> Bool {
        guard consumed, op.kind == .flush, case .qcow2 = model else { return false }
        return qcow2.flushRetriedAtClose
    }

    /// Takes in the outcome of a performed operation (for reads, what was read).
    public mutating func after(_ op: Operation, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        if alignmentProbe.isActive, alignmentProbe.finished(succeeded: succeeded) { return [] }
        let events = classifyAfter(op, performed: true, succeeded: succeeded, file: file)
        if holdsDone(op, events) { heldDone += events } else { raiseAfter(events) }
        return events
    }

    /// qcow2 submits the data tasks of one request back to back, with no yield in between
    /// when no metadata I/O intervenes: blkdebug checks each before an earlier one's
    /// completion raises `pwritev_done` (that waits for the coroutine to yield). The preload
    /// sees each task's pwrite in its worker thread, possibly after an earlier one finished.
    /// So a guest data write's `pwritev_done` is held while nothing but guest data writes
    /// was decided since, and raised before the next other request (in writethrough mode,
    /// where each request ends with a flush: a later request's data write never follows
    /// without one).
    private func holdsDone(_ op: Operation, _ events: [BlkdebugEvent]) -> Bool {
        op.kind == .write && lastWasGuestWrite && !writesBack && actions.isEmpty && events == [.pwritevDone]
            && rules.hasRules(for: .pwritevDone)
    }

    private mutating func releaseHeldDone(unlessGuestWrite events: [BlkdebugEvent]) {
        lastWasGuestWrite = events.contains(.writeAio)
        guard !heldDone.isEmpty, !lastWasGuestWrite else { return }
        raiseAfter(heldDone)
        heldDone = []
    }

    private mutating func raiseAfter(_ events: [BlkdebugEvent]) {
        for e in events {
            if actions.isEmpty {
                if rules.hasRules(for: e) { rules.fire(e) }
                continue
            }
            let state = rules.state
            rules.fire(e)
            if !actions.isEmpty { actions.raiseAfter(e, state: state, occurrence: rules.occurrences(of: e)) }
        }
    }

    private mutating func classifyBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2: return qcow2.eventsBefore(op, file: file)
        case .raw, .pending: return raw.eventsBefore(op, file: file)
        }
    }

    private mutating func classifyAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2: return qcow2.eventsAfter(op, performed: performed, succeeded: succeeded, file: file)
        case .raw, .pending: return raw.eventsAfter(op, performed: performed, succeeded: succeeded, file: file)
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
            layoutEpoch &+= 1 << 40
            qcow2 = Qcow2Classifier(shadow: shadow)
            model = .qcow2
            rawReason = nil
        }
    }
}

/// The steady path as the preload's lock-free pre-filter sees it (blkfault_steady.h): a
/// read or write of guest data that `decide` would let through while changing nothing
/// (then `after` changes nothing either) needs neither the lock nor the classifier.
extension ImageEngine {
    /// Which kinds of guest data request change nothing now, given that nothing records
    /// or acts on a step (no trace, actions or shared state: the caller knows): their
    /// events' raises change nothing observable (`BlkdebugRules.raiseChangesNothing`) and
    /// the classifier's steady path is idle. `rule` receives each active rule (sector
    /// byte or -1, iotype mask): a skipped request must not be covered by any; false from
    /// it, or an active rule with a trigger, skips nothing.
    @inline(__always)  // (steadyView: called, the engine would be copied first)
    public func steadyKinds(rule: (_ sectorOffset: Int64, _ iotypes: IOTypeMask) -> Bool) -> (reads: Bool, writes: Bool) {
        guard steadyPathOpen else { return (false, false) }
        var (reads, writes) = qcow2.steadyKinds
        reads = reads && rules.raiseChangesNothing(.readAio)
        writes = writes && rules.raiseChangesNothing(.writeAio) && rules.raiseChangesNothing(.pwritev)
            && rules.raiseChangesNothing(.pwritevDone)
        guard reads || writes, rules.forEachActiveRule(rule) else { return (false, false) }
        return (reads, writes)
    }

    /// Changes when a cluster may have stopped being wholly guest data (`ShadowImage.layoutVersion`,
    /// or the classifier was replaced).
    @inline(__always)  // (steadyView: called, the engine would be copied first)
    public var layoutVersion: UInt64 {
        guard case .qcow2 = model else { return layoutEpoch }
        return layoutEpoch &+ qcow2.shadow.layoutVersion
    }

    /// `ShadowImage.wholeDataWord`: clusters wholly guest data, 64 from cluster 64*w (0 unless qcow2).
    @inline(__always)  // (steadyView: called, the engine would be copied first)
    public func wholeDataWord(_ w: UInt64) -> UInt64 {
        guard case .qcow2 = model else { return 0 }
        return qcow2.shadow.wholeDataWord(w)
    }

    /// `layoutVersion`, for a caller holding the engine inout (the preload, under the engine's
    /// lock). `mutating` only so that the engine is passed by address: a non-mutating call
    /// from another module copies the whole engine (~1 KB) to the stack first.
    public mutating func steadyLayoutVersion() -> UInt64 { layoutVersion }

    /// What the preload's pre-filter publishes after a call, gathered in one call (by
    /// address, as `steadyLayoutVersion`): `steadyKinds(rule:)`, `layoutVersion`,
    /// `clusterBits`, and `wholeDataWord` of the words holding `op`'s first and last clusters
    /// when it is a read or a write.
    public mutating func steadyView(touching op: SteadyRequest?,
                                    rule: (_ sectorOffset: Int64, _ iotypes: IOTypeMask) -> Bool) -> SteadyView {
        // The rules are looked at only when the classifier's steady path is idle (a call:
        // inlined, the rule set was copied to the stack on every call).
        let kinds = mayBeSteady ? steadyKindsByAddress(rule: rule) : (reads: false, writes: false)
        var view = SteadyView(layoutVersion: layoutVersion, clusterBits: clusterBits, reads: kinds.reads, writes: kinds.writes)
        let bits = UInt64(view.clusterBits)
        // Not for a metadata read (every read of `qemu-img check`): its cluster is no guest
        // data, and a neighbour's bit the filter lacks is learnt from that neighbour's request.
        if let op, bits > 0, op.kind == .write || (op.kind == .read && !(model == .qcow2 && qcow2.lastReadIsMetadata)) {
            let first = op.offset >> bits
            let last = op.length > 0 ? op.offset.addingReportingOverflow(op.length - 1).partialValue >> bits : first
            view.firstWord = (first >> 6, wholeDataWord(first >> 6))
            if last >> 6 != first >> 6, last > first { view.lastWord = (last >> 6, wholeDataWord(last >> 6)) }
        }
        return view
    }

    /// Whether `steadyView(touching: op)` would open no kind, give no word and report the
    /// layout version `layout`: `op` a read the qcow2 classifier took as metadata while
    /// its steady path is shut (`mayBeSteady` false: no rule looked at). By address, as
    /// `steadyLayoutVersion`.
    public mutating func steadyStaysShut(afterRead op: SteadyRequest, layoutWas layout: UInt64) -> Bool {
        guard op.kind == .read, case .qcow2 = model, qcow2.lastReadIsMetadata else { return false }
        // (After a table read the classifier's steady kinds are shut at their first test.)
        guard qcow2.steadyShutByTableRead || !mayBeSteady else { return false }
        return layoutVersion == layout
    }

    /// `steadyKinds(rule:)` can be other than (false, false): the part of it that reads only flags.
    @inline(__always)
    private var mayBeSteady: Bool {
        guard steadyPathOpen else { return false }
        let (reads, writes) = qcow2.steadyKinds
        return reads || writes
    }

    /// The engine's own conditions for a steady path (the classifier's: `steadyKinds`) and
    /// for `decide`'s walk path: qcow2, no backing file followed, no action rules, no
    /// `pwritev_done` held.
    @inline(__always)
    private var steadyPathOpen: Bool {
        guard case .qcow2 = model, !followsBacking, actions.isEmpty, heldDone.isEmpty else { return false }
        return true
    }

    /// `steadyKinds(rule:)`, the engine passed by address (`mutating` only for that).
    @inline(never)
    private mutating func steadyKindsByAddress(rule: (_ sectorOffset: Int64, _ iotypes: IOTypeMask) -> Bool) -> (reads: Bool, writes: Bool) {
        steadyKinds(rule: rule)
    }

    /// log2 of the cluster size, 0 unless qcow2.
    @inline(__always)  // (steadyView: called, the engine would be copied first)
    public var clusterBits: UInt32 {
        guard case .qcow2 = model else { return 0 }
        return qcow2.shadow.header.clusterBits
    }
}

/// What the preload's steady pre-filter publishes after a call (`ImageEngine.steadyView`).
public struct SteadyView: Sendable {
    public var layoutVersion: UInt64
    public var clusterBits: UInt32
    public var reads: Bool
    public var writes: Bool
    /// (word index, `wholeDataWord` of it) for the request's first cluster, and for its last
    /// when that lies in another word.
    public var firstWord: (index: UInt64, bits: UInt64)?
    public var lastWord: (index: UInt64, bits: UInt64)?
}

/// The request whose clusters `steadyView` looks at: an `Operation` without its data
/// closure (an optional `Operation` is retained and released to be unwrapped).
public struct SteadyRequest: Sendable {
    public var kind: OperationKind
    public var offset: UInt64
    public var length: UInt64

    @inline(__always)
    public init(_ op: Operation) { kind = op.kind; offset = op.offset; length = op.length }
}
