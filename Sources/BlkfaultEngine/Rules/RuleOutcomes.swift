/// What raising an event did to a blkdebug node, for the trace.
public struct EventOutcome: Sendable {
    public let event: BlkdebugEvent
    public let stateBefore: Int32
    public let stateAfter: Int32
    /// The `[set-state]` rule that chose `stateAfter`, if one matched.
    public let setStateRuleLine: Int?
    /// The inject rules this event put in the active list, front first. Empty when the
    /// event left the active list alone (it is replaced only by an event with a matching inject rule).
    public let activated: ActivatedRules

    public var activeListReplaced: Bool { !activated.isEmpty }
}

/// Inject rules by position, sharing storage with the node that produced them (no copy
/// is made unless the node changes its active list while this is still held).
public struct ActivatedRules: RandomAccessCollection, Sendable {
    let rules: [InjectRule]
    let ruleIndices: [Int32]

    public var startIndex: Int { 0 }
    public var endIndex: Int { ruleIndices.count }
    public subscript(position: Int) -> InjectRule { rules[Int(ruleIndices[position])] }

    /// Header lines of the rules, for the trace.
    public var lines: [Int] { map(\.line) }
}

/// A request an active inject rule fails.
public struct InjectDecision: Sendable, Equatable {
    /// Positive: fail the request with this errno. Negative: report success without
    /// doing the I/O (blkdebug returns `-errno`, which the block layer reads as success).
    public let errno: Int32
    /// Header line of the rule that decided.
    public let line: Int
    /// Index of that rule in `RuleSet.injectRules`.
    public let ruleIndex: Int
    /// The rule had `once` and is now gone for good.
    public let consumed: Bool
    public let immediately: Bool
    /// QEMU 11.1's delay-ns; with errno 0 the request is performed after it.
    public var delayNs: UInt64 = 0
    /// blkfault: the raise of its event (and the seed, for a probability) that activated the rule.
    public var choice: Choice? = nil
}
