/// blkfault's extra conditions on a rule (not blkdebug's): which raise of its event it
/// acts on. A rule with a trigger is chosen (or not) afresh at every raise of its event,
/// and acts only on the request during which the chosen raise happened.
public struct Trigger: Sendable, Equatable {
    /// Act only on the Nth raise of the event (1-based), counted per image in this process.
    public var occurrence: UInt64?
    /// Act on a raise with this probability (0...1).
    public var probability: Double?
    /// The rule's own seed; nil = the run's seed (BLKFAULT_SEED or a random one).
    public var seed: UInt64?

    public init(occurrence: UInt64? = nil, probability: Double? = nil, seed: UInt64? = nil) {
        self.occurrence = occurrence
        self.probability = probability
        self.seed = seed
    }
}

/// Why a rule acted: shown in the trace so that any run can be replayed.
public struct Choice: Sendable, Equatable {
    /// The raise of the event (1-based, per image) that chose the rule.
    public var occurrence: UInt64
    /// The seed of the draw, when the rule has a probability.
    public var seed: UInt64?

    public init(occurrence: UInt64, seed: UInt64?) {
        self.occurrence = occurrence
        self.seed = seed
    }
}

/// The draws of the rules that have a probability: one SplitMix64 stream per rule, so a
/// rule's draws depend only on the seed, its line and how often its event was raised,
/// never on other rules.
struct Dice: Sendable {
    private var streams: [UInt64]
    let seeds: [UInt64]

    init(seeds: [UInt64], lines: [Int]) {
        self.seeds = seeds
        streams = zip(seeds, lines).map { $0 ^ (UInt64($1) &* 0x9E37_79B9_7F4A_7C15) }
    }

    /// A uniform draw in [0, 1) from rule `index`'s stream.
    mutating func draw(_ index: Int) -> Double {
        streams[index] &+= 0x9E37_79B9_7F4A_7C15
        var z = streams[index]
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Whether `trigger` chooses rule `index` on the `occurrence`th raise of its event.
    mutating func chooses(_ trigger: Trigger, index: Int, occurrence: UInt64) -> Choice? {
        if let wanted = trigger.occurrence, wanted != occurrence { return nil }
        guard let p = trigger.probability else { return Choice(occurrence: occurrence, seed: nil) }
        return draw(index) < p ? Choice(occurrence: occurrence, seed: seeds[index]) : nil
    }
}
