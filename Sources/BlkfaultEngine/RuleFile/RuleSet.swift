/// The rules of one blkdebug configuration file, in file order.
public struct RuleSet: Sendable, Equatable {
    /// The `[inject-error]` sections, in file order.
    public var injectRules: [InjectRule]
    /// The `[set-state]` sections, in file order.
    public var setStateRules: [SetStateRule]
    /// blkfault's action sections ([crash], [torn-write], [corrupt], [break]), in file order.
    public var actionRules: [ActionRule]

    public init(injectRules: [InjectRule] = [], setStateRules: [SetStateRule] = [], actionRules: [ActionRule] = []) {
        self.injectRules = injectRules
        self.setStateRules = setStateRules
        self.actionRules = actionRules
    }

    public var isEmpty: Bool { injectRules.isEmpty && setStateRules.isEmpty && actionRules.isEmpty }

    /// Some rule undoes unsynced writes at a crash: every write's pre-image must be kept.
    public var losesUnsynced: Bool {
        actionRules.contains {
            switch $0.action {
            case .crash(_, let lose), .tornWrite(_, _, let lose): lose
            default: false
            }
        }
    }

    /// Some rule draws at random: the trace names the seed.
    public var usesProbability: Bool {
        injectRules.contains { $0.trigger?.probability != nil } || actionRules.contains { $0.trigger?.probability != nil }
    }
}

/// One `[inject-error]` section.
public struct InjectRule: Sendable, Equatable {
    /// The event that activates the rule.
    public var event: BlkdebugEvent
    /// Activate only when the state equals this when the event fires; 0 = any state.
    public var state: Int32
    /// What a failed request reports: positive = that error, negative = success
    /// without doing the I/O (blkdebug returns `-errno`), 0 = let it through.
    public var errno: Int32
    /// Byte offset (`sector` × 512) a request must cover; -1 = any request.
    public var sectorOffset: Int64
    /// After failing one request the rule is gone for good.
    public var once: Bool
    /// QEMU 7.2: fail without yielding first. Not observable from outside QEMU.
    public var immediately: Bool
    /// The request kinds it fails.
    public var iotypeMask: IOTypeMask
    /// Line of the section header (1-based).
    public var line: Int
    /// Position among the file's `[inject-error]` sections (0-based) = index in `RuleSet.injectRules`.
    public var index: Int
    /// The QemuOpts id (`[inject-error "id"]` or `id = "..."`), if given.
    public var id: String?
    /// blkfault: occurrence / probability; nil for a plain blkdebug rule.
    public var trigger: Trigger?
    /// QEMU 11.1's `delay-ns`: wait this long before failing (or, with errno 0, performing) the request.
    public var delayNs: UInt64

    public init(
        event: BlkdebugEvent, state: Int32 = 0, errno: Int32 = 5, sectorOffset: Int64 = -1,
        once: Bool = false, immediately: Bool = false, iotypeMask: IOTypeMask = .blkdebugDefault,
        line: Int = 0, index: Int = 0, id: String? = nil, trigger: Trigger? = nil, delayNs: UInt64 = 0
    ) {
        self.trigger = trigger
        self.delayNs = delayNs
        self.event = event
        self.state = state
        self.errno = errno
        self.sectorOffset = sectorOffset
        self.once = once
        self.immediately = immediately
        self.iotypeMask = iotypeMask
        self.line = line
        self.index = index
        self.id = id
    }
}

/// One `[set-state]` section.
public struct SetStateRule: Sendable, Equatable {
    /// The event that triggers the transition.
    public var event: BlkdebugEvent
    /// Transition only from this state; 0 = any state.
    public var state: Int32
    /// The state entered.
    public var newState: Int32
    /// Line of the section header (1-based).
    public var line: Int
    /// The QemuOpts id, if given.
    public var id: String?

    public init(event: BlkdebugEvent, state: Int32 = 0, newState: Int32 = 0, line: Int = 0, id: String? = nil) {
        self.event = event
        self.state = state
        self.newState = newState
        self.line = line
        self.id = id
    }
}
