/// The rule state machine of one blkdebug node (QEMU 7.2 block/blkdebug.c): the state,
/// the per-event rules and the list of active inject rules.
public struct BlkdebugRules: Sendable {
    public let injectRules: [InjectRule]
    public let setStateRules: [SetStateRule]
    /// blkdebug sets it to 1 once its rules are loaded.
    public private(set) var state: Int32 = 1

    /// Rule indices per event, in definition order.
    private let injectByEvent: RulesByEvent
    private let setStateByEvent: RulesByEvent
    /// Inject rules deleted for good by `once`.
    private var consumed: [Bool]
    /// Rules per event that can still act, for `hasRules(for:)`.
    private var liveCount: [Int32]
    /// The active list: indices into `injectRules`, front first, are the first
    /// `activeCount` slots (one slot per rule, allocated once: emptying the list on
    /// every raise writes a count instead of going through Array's removeAll).
    private var activeSlots: [Int32]
    private var activeCount = 0
    /// blkfault: raises of each event so far (occurrence), per image.
    private var raises: [UInt64]
    /// blkfault: draws of the rules with a probability, and the raise that activated each rule.
    private var dice: Dice
    /// The raise that activated each inject rule; occurrence 0 (raises count from 1): none.
    /// Not `[Choice?]`: its Optional metadata cost the engine's start ~28 K instructions
    /// (the runtime's first Optional; issue 7, s8-7a).
    private var choices: [Choice]
    private let hasTriggers: Bool

    /// `seed`: the run's seed, for rules with a probability and no seed of their own.
    public init(_ rules: RuleSet, seed: UInt64 = 0) {
        raises = filledArray(0, count: BlkdebugEvent.allCases.count)
        dice = Dice(seeds: mappedArray(rules.injectRules) { $0.trigger?.seed ?? seed }, lines: mappedArray(rules.injectRules) { $0.line })
        choices = filledArray(Choice(occurrence: 0, seed: nil), count: rules.injectRules.count)
        hasTriggers = rules.injectRules.contains { $0.trigger != nil }
        injectRules = rules.injectRules
        setStateRules = rules.setStateRules
        let injects = RulesByEvent(mappedArray(rules.injectRules) { $0.event })
        let setStates = RulesByEvent(mappedArray(rules.setStateRules) { $0.event })
        injectByEvent = injects
        setStateByEvent = setStates
        consumed = filledArray(false, count: rules.injectRules.count)
        liveCount = mappedArray(BlkdebugEvent.allCases) { Int32(injects[$0].count + setStates[$0].count) }
        activeSlots = filledArray(0, count: rules.injectRules.count)
    }

    /// blkfault: takes the state another process left (state shared by one `blkfault run`).
    public mutating func adoptState(_ shared: Int32) { state = shared }

    /// How often `event` was raised so far (the current raise's occurrence right after `raise`).
    public func occurrences(of event: BlkdebugEvent) -> UInt64 { raises[event.rawValue] }

    /// Whether raising `event` can do anything (change the state or the active list).
    public func hasRules(for event: BlkdebugEvent) -> Bool { liveCount[event.rawValue] > 0 }

    /// Whether any request can be failed right now.
    public var hasActiveRules: Bool { activeCount > 0 }

    /// The active inject rules, front (checked first) first.
    public var activeRules: ActivatedRules { ActivatedRules(rules: injectRules, ruleIndices: active) }

    private var active: [Int32] { Array(activeSlots[0..<activeCount]) }

    private mutating func removeActive(at position: Int) {
        var i = position
        while i + 1 < activeCount { activeSlots[i] = activeSlots[i + 1]; i += 1 }
        activeCount -= 1
    }

    /// blkdebug_debug_event: every rule of `event` is tested against the state before the
    /// event. The first matching inject rule empties the active list, and the matching
    /// inject rules end up in it in definition order (blkdebug head-inserts rules that it
    /// walks newest first). Of the matching set-state rules the first defined wins (blkdebug
    /// applies them newest first, each overwriting). The state changes after the walk, so an
    /// inject rule keyed to the new state does not fire on this occurrence.
    public mutating func raise(_ event: BlkdebugEvent) -> EventOutcome {
        let before = state
        let (replaced, setStateLine) = fire(event)
        return EventOutcome(
            event: event, stateBefore: before, stateAfter: state, setStateRuleLine: setStateLine,
            activated: ActivatedRules(rules: injectRules, ruleIndices: replaced ? active : [])
        )
    }

    /// `raise` without its outcome (the I/O path; building the outcome retains the
    /// rule arrays): whether the active list was replaced, and the set-state rule's line.
    @discardableResult
    public mutating func fire(_ event: BlkdebugEvent) -> (replaced: Bool, setStateLine: Int?) {
        let before = state
        var replaced = false
        raises[event.rawValue] &+= 1
        for k in injectByEvent.positions(event) where !consumed[Int(injectByEvent.order[k])] {
            let index = injectByEvent.order[k]
            let i = Int(index)
            if let trigger = injectRules[i].trigger {
                // blkfault: a rule with a trigger is active only from the raise that chose
                // it to the next raise of its event.
                let choice = Self.matches(injectRules[i].state, before)
                    ? dice.chooses(trigger, index: i, occurrence: raises[event.rawValue]) : nil
                choices[i] = choice ?? Choice(occurrence: 0, seed: nil)
                if choice == nil {
                    if !replaced, let position = activeSlots[0..<activeCount].firstIndex(of: index) { removeActive(at: position) }
                    continue
                }
            } else if !Self.matches(injectRules[i].state, before) {
                continue
            } else {
                // For the trace: the raise that activated the rule.
                choices[i] = Choice(occurrence: raises[event.rawValue], seed: nil)
            }
            if !replaced {
                activeCount = 0
                replaced = true
            }
            activeSlots[activeCount] = index
            activeCount += 1
        }
        for k in setStateByEvent.positions(event) {
            let i = Int(setStateByEvent.order[k])
            if Self.matches(setStateRules[i].state, before) {
                state = setStateRules[i].newState
                return (replaced, setStateRules[i].line)
            }
        }
        return (replaced, nil)
    }

    /// Whether raising `event` now changes nothing observable once nothing is traced
    /// and no action counts raises: the state stays (no set-state rule matches, or it
    /// sets the state it finds), the active list stays (no inject rule matches, or the
    /// matching ones are the active list, in order), and no rule of the event has an
    /// occurrence or probability (their draws count every raise). Only the raise
    /// counter and the trace's choices would move.
    public func raiseChangesNothing(_ event: BlkdebugEvent) -> Bool {
        guard hasRules(for: event) else { return true }
        var matching = 0
        for k in injectByEvent.positions(event) where !consumed[Int(injectByEvent.order[k])] {
            let index = injectByEvent.order[k]
            if injectRules[Int(index)].trigger != nil { return false }
            guard Self.matches(injectRules[Int(index)].state, state) else { continue }
            if matching >= activeCount || activeSlots[matching] != index { return false }
            matching += 1
        }
        if matching > 0 && matching != activeCount { return false }
        for k in setStateByEvent.positions(event) {
            let i = Int(setStateByEvent.order[k])
            if Self.matches(setStateRules[i].state, state) { return setStateRules[i].newState == state }
        }
        return true
    }

    /// `body(sector byte or -1, iotype mask)` for each active rule, front first; false
    /// (and stops) if `body` does, or if a rule has a trigger (`endRequest` drops those).
    public func forEachActiveRule(_ body: (_ sectorOffset: Int64, _ iotypes: IOTypeMask) -> Bool) -> Bool {
        for position in 0..<activeCount {
            let i = Int(activeSlots[position])
            guard injectRules[i].trigger == nil, body(injectRules[i].sectorOffset, injectRules[i].iotypeMask) else { return false }
        }
        return true
    }

    /// rule_check: the first active rule that covers the request (no sector, or a sector
    /// byte inside a non-empty request; C's unsigned comparisons) and its iotype decides.
    /// A matching rule with errno 0 lets the request through and shadows the rules behind
    /// it, and is never consumed. Nil = perform the request.
    public mutating func check(offset: Int64, bytes: Int64, iotype: IOType) -> InjectDecision? {
        let start = UInt64(bitPattern: offset), length = UInt64(bitPattern: bytes)
        // By position, not by element: iterating the array itself would hold its storage
        // and make the `once` removal copy it. The rule's fields are read in place until it
        // covers the request (a copy of the rule retains its id).
        for position in 0..<activeCount {
            let index = activeSlots[position]
            let sectorOffset = injectRules[Int(index)].sectorOffset
            let target = UInt64(bitPattern: sectorOffset)
            let covers = sectorOffset == -1 || (length > 0 && target >= start && target < start &+ length)
            guard covers, injectRules[Int(index)].iotypeMask.contains(iotype) else { continue }
            let rule = injectRules[Int(index)]
            // QEMU 11.1: with delay-ns, errno 0 means "succeed after the delay".
            guard rule.errno != 0 || rule.delayNs != 0 else { return nil }
            if rule.once {
                removeActive(at: position)
                consumed[Int(index)] = true
                liveCount[rule.event.rawValue] -= 1
            }
            return InjectDecision(errno: rule.errno, line: rule.line, ruleIndex: Int(index), consumed: rule.once,
                                  immediately: rule.immediately, delayNs: rule.delayNs,
                                  choice: choices[Int(index)].occurrence == 0 ? nil : choices[Int(index)])
        }
        return nil
    }

    /// blkfault: a rule with occurrence or probability acts only on the request during
    /// which its chosen raise happened (or, for an event raised after a request, the next
    /// one), never on the I/O that follows: called once that request was checked.
    public mutating func endRequest() {
        guard hasTriggers else { return }
        var kept = 0
        for position in 0..<activeCount where injectRules[Int(activeSlots[position])].trigger == nil {
            activeSlots[kept] = activeSlots[position]
            kept += 1
        }
        activeCount = kept
    }

    /// A rule's `state` filter: 0 matches any state.
    private static func matches(_ ruleState: Int32, _ current: Int32) -> Bool {
        ruleState == 0 || ruleState == current
    }
}

/// Rule indices grouped by event in one flat array (indices of event e are
/// `order[start[e]..<start[e+1]]`), so a lookup touches no per-event allocation.
private struct RulesByEvent: Sendable {
    private let start: [Int]
    let order: [Int32]

    init(_ events: [BlkdebugEvent]) {
        var counts = filledArray(0, count: BlkdebugEvent.allCases.count + 1)
        for event in events { counts[event.rawValue + 1] += 1 }
        for i in 1..<counts.count { counts[i] += counts[i - 1] }
        start = counts
        var next = counts
        var order = filledArray(Int32(0), count: events.count)
        for (index, event) in events.enumerated() {
            order[next[event.rawValue]] = Int32(index)
            next[event.rawValue] += 1
        }
        self.order = order
    }

    subscript(event: BlkdebugEvent) -> ArraySlice<Int32> { order[positions(event)] }

    /// Where event's rules are in `order` (indexing by position holds no slice of it).
    func positions(_ event: BlkdebugEvent) -> Range<Int> { start[event.rawValue]..<start[event.rawValue + 1] }
}
