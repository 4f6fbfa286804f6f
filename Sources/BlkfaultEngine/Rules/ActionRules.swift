/// The action rules of one image: which of them the events of a request arm, and what
/// they do to that request. Unlike blkdebug's active list nothing stays armed: an action
/// acts on the request during which its event is raised (an event raised after a
/// request, like pwritev_done, arms actions for the next request).
public struct ActionRules: Sendable {
    public let rules: [ActionRule]
    private var consumed: [Bool]
    private var dice: Dice
    /// Reads of the header so far, the occurrence of event-less [corrupt] field rules.
    private var headerReads: UInt64 = 0
    /// Armed by events raised after the previous request.
    private var carried: [Armed] = []

    struct Armed: Sendable {
        var index: Int
        var choice: Choice
    }

    public init(_ rules: [ActionRule], seed: UInt64) {
        self.rules = rules
        consumed = Array(repeating: false, count: rules.count)
        dice = Dice(seeds: rules.map { $0.trigger?.seed ?? seed }, lines: rules.map(\.line))
    }

    public var isEmpty: Bool { rules.isEmpty }

    /// The rules `event` arms, raised in `state` as its `occurrence`th raise.
    mutating func raise(_ event: BlkdebugEvent, state: Int32, occurrence: UInt64, into armed: inout [Armed]) {
        for index in rules.indices where rules[index].event == event && !consumed[index] {
            let rule = rules[index]
            guard rule.state == 0 || rule.state == state else { continue }
            let choice = rule.trigger.map { dice.chooses($0, index: index, occurrence: occurrence) }
                ?? Choice(occurrence: occurrence, seed: nil)
            if let choice { armed.append(Armed(index: index, choice: choice)) }
        }
    }

    /// Events raised after a request arm actions for the next one.
    mutating func raiseAfter(_ event: BlkdebugEvent, state: Int32, occurrence: UInt64) {
        var armed = carried
        raise(event, state: state, occurrence: occurrence, into: &armed)
        carried = armed
    }

    /// The armed rules (plus the event-less header rules) applied to `op`, whose request
    /// blkdebug decided as `decision`: what blkfault does on top.
    mutating func apply(_ armedNow: [Armed], to op: Operation, decision: inout Decision, header: Qcow2Header?,
                        effects: inout Effects) {
        var armed = carried + armedNow
        carried.removeAll()
        if op.kind == .read, let header = header { armHeaderRules(op, header: header, into: &armed) }
        for a in armed where !consumed[a.index] {
            let rule = rules[a.index]
            guard let iotype = op.kind.ioType, rule.iotypeMask.contains(iotype) || rule.event == nil else { continue }
            let target = UInt64(bitPattern: rule.sectorOffset)
            guard rule.sectorOffset == -1 || (op.length > 0 && target >= op.offset && target < op.end) else { continue }
            var taken = TakenAction(action: rule.action, line: rule.line, choice: a.choice)
            switch rule.action {
            case .crash(let after, let lose):
                if after && decision == .perform {
                    effects.crashAfter = lose
                } else {
                    decision = .crash(loseUnsynced: lose)
                }
            case .tornWrite(let keep, let then, let lose):
                guard op.kind == .write, decision == .perform else { continue }
                decision = .torn(keep: min(keep, op.length), then: then, loseUnsynced: lose)
            case .corrupt(let target):
                guard op.kind == .read, decision == .perform,
                      let patch = Self.patch(target, event: rule.event, op: op, header: header) else { continue }
                effects.patches.append(patch)
                taken.patch = patch
            case .breakpoint(let tag):
                effects.breakTag = tag
            }
            if rule.once { consumed[a.index] = true }
            effects.taken.append(taken)
        }
    }

    private mutating func armHeaderRules(_ op: Operation, header: Qcow2Header, into armed: inout [Armed]) {
        var counted = false
        for index in rules.indices where rules[index].event == nil && !consumed[index] {
            guard case .corrupt(.field(let field, _)) = rules[index].action,
                  op.offset <= field.offset, field.offset + UInt64(field.size) <= op.end else { continue }
            if !counted { headerReads += 1; counted = true }
            let choice = rules[index].trigger.map { dice.chooses($0, index: index, occurrence: headerReads) }
                ?? Choice(occurrence: headerReads, seed: nil)
            if let choice { armed.append(Armed(index: index, choice: choice)) }
        }
    }

    /// Where the target lies in this read's buffer; nil when the read does not hold it.
    static func patch(_ target: CorruptTarget, event: BlkdebugEvent?, op: Operation, header: Qcow2Header?) -> BufferPatch? {
        let at: UInt64, bytes: [UInt8], xor: Bool
        switch target {
        case .byte(let offset, let mask):
            (at, bytes, xor) = (offset, [mask], true)
        case .entry(let index, let value):
            var width: UInt64 = 8
            if event == .refblockLoad {
                guard let bits = header?.refcountBits, bits >= 8 else { return nil }
                width = bits / 8
            } else if event == .l2Load, let h = header {
                width = h.l2EntrySize
            }
            let (start, overflow) = index.multipliedReportingOverflow(by: width)
            guard !overflow else { return nil }
            (at, bytes, xor) = (start, bigEndianBytes(value, size: Int(min(width, 8))), false)
        case .field(let field, let value):
            guard field.offset >= op.offset else { return nil }
            (at, bytes, xor) = (field.offset - op.offset, bigEndianBytes(value, size: field.size), false)
        }
        guard at < op.length, UInt64(bytes.count) <= op.length - at else { return nil }
        return BufferPatch(offset: at, bytes: bytes, xor: xor)
    }
}
