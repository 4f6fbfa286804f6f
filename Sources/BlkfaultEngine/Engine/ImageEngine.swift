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
}

/// One blkdebug node's worth of state for one image: the rules, and the
/// classifier that says which events each I/O carries. A pure state machine:
/// `(operation) -> decision`, driven by the preload or by a test.
public struct ImageEngine: Sendable {
    public private(set) var rules: BlkdebugRules
    private var model: Model
    /// The classifiers, outside the enum: one taken out of an enum payload to be
    /// mutated is a copy (every field retained, every set copied on first write).
    private var qcow2: Qcow2Classifier?
    private var raw = RawClassifier()
    /// Why the image is followed in raw mode, if it is.
    public private(set) var rawReason: String?

    enum Model: Sendable {
        /// `qcow2` holds the classifier.
        case qcow2
        case raw
        /// Not a qcow2 image yet (e.g. being created): retried when the header is read.
        case pending
    }

    public init(rules: RuleSet, file: ImageReader, model choice: ModelChoice = .qemu72) {
        self.rules = BlkdebugRules(rules)
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
            }
            rawReason = error.description
        }
    }

    public var modelName: String {
        switch model {
        case .qcow2: return qcow2!.modelName
        case .raw, .pending: return "raw"
        }
    }

    public var shadow: ShadowImage? {
        if case .qcow2 = model { return qcow2!.shadow }
        return nil
    }

    /// The program opened the image (again); `writable` if for writing.
    public mutating func noteOpen(writable: Bool) {
        if case .qcow2 = model { qcow2!.writable = qcow2!.writable || writable }
    }

    /// Decides an operation before it reaches the file.
    public mutating func before(_ op: Operation, file: ImageReader) -> Step {
        retryQcow2IfPending(op, file: file)
        var step = Step()
        step.stateBefore = rules.state
        step.events = classifyBefore(op, file: file)
        // An event no rule names changes nothing: skip building its outcome.
        for e in step.events where rules.hasRules(for: e) { _ = rules.raise(e) }
        step.stateAfter = rules.state
        if let iotype = op.kind.ioType,
           let hit = rules.check(offset: Int64(bitPattern: op.offset), bytes: Int64(bitPattern: op.length), iotype: iotype) {
            step.ruleLine = hit.line
            step.decision = hit.errno < 0 ? .pretendSuccess : .fail(errno: hit.errno)
        }
        if step.decision != .perform {
            // blkdebug failed the request: the block layer still finishes it.
            step.eventsAfter = classifyAfter(op, performed: false, succeeded: false, file: file)
            for e in step.eventsAfter where rules.hasRules(for: e) { _ = rules.raise(e) }
            step.stateAfter = rules.state
        }
        return step
    }

    /// Takes in the outcome of a performed operation (for reads, what was read).
    public mutating func after(_ op: Operation, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        let events = classifyAfter(op, performed: true, succeeded: succeeded, file: file)
        for e in events where rules.hasRules(for: e) { _ = rules.raise(e) }
        return events
    }

    private mutating func classifyBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2: return qcow2!.eventsBefore(op, file: file)
        case .raw, .pending: return raw.eventsBefore(op, file: file)
        }
    }

    private mutating func classifyAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        switch model {
        case .qcow2: return qcow2!.eventsAfter(op, performed: performed, succeeded: succeeded, file: file)
        case .raw, .pending: return raw.eventsAfter(op, performed: performed, succeeded: succeeded, file: file)
        }
    }

    /// An image created by the program becomes qcow2 once its header is on disk.
    private mutating func retryQcow2IfPending(_ op: Operation, file: ImageReader) {
        guard case .pending = model, op.kind == .read, op.offset == 0 else { return }
        if let shadow = try? ShadowImage(reading: file) {
            qcow2 = Qcow2Classifier(shadow: shadow)
            model = .qcow2
            rawReason = nil
        }
    }
}
