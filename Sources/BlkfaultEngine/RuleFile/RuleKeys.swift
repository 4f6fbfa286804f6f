// The sections and keys a rule file may use: the one table the parser checks keys
// against, `blkfault validate` and README's syntax table come from. blkdebug's own
// sections and keys are marked; everything else is blkfault's superset.

/// The option groups: blkdebug's two (block/blkdebug.c), then blkfault's actions.
enum RuleSection: String, CaseIterable {
    case injectError = "inject-error"
    case setState = "set-state"
    case crash = "crash"
    case tornWrite = "torn-write"
    case corrupt = "corrupt"
    case breakpoint = "break"

    enum Kind { case string, number, bool }

    /// Real blkdebug (QEMU 7.2) knows this section.
    var isBlkdebug: Bool { self == .injectError || self == .setState }

    var meaning: String {
        switch self {
        case .injectError: "fail (or delay) the requests that follow the event"
        case .setState: "change the state when the event is raised"
        case .crash: "the process dies by SIGKILL at the event (optionally losing unsynced writes: power loss)"
        case .tornWrite: "only the first bytes of the matching write reach the file, then a crash or an error"
        case .corrupt: "alter the buffer a matching read returns (never the file)"
        case .breakpoint: "the thread raising the event stops until `blkfault resume TAG`"
        }
    }

    var parameters: [RuleKey] {
        switch self {
        case .injectError:
            [RuleKey.event, RuleKey.state, RuleKey.iotype,
             RuleKey("errno", .number, blkdebug: true, "errno of the failure (default 5 = EIO); 0 = let it through, negative = pretend success"),
             RuleKey.sector, RuleKey.once,
             RuleKey("immediately", .bool, blkdebug: true, "fail without yielding first (not observable outside QEMU)")]
                + RuleKey.triggers
                + [RuleKey("delay-ns", .number, blkdebug: false, "wait this long before failing the request, or before performing it when errno is 0 (QEMU 11.1's key; QEMU 7.2 rejects it)")]
        case .setState:
            [RuleKey.event, RuleKey.state,
             RuleKey("new_state", .number, blkdebug: true, "the state entered")]
        case .crash:
            RuleKey.targeting + [
                RuleKey("when", .string, blkdebug: false, "\"before\" (default) or \"after\" the request reaches the file"),
                RuleKey.loseUnsynced]
        case .tornWrite:
            RuleKey.targeting + [
                RuleKey("keep", .number, blkdebug: false, "bytes of the write that reach the file"),
                RuleKey("keep-sectors", .number, blkdebug: false, "the same in 512-byte sectors"),
                RuleKey("then", .string, blkdebug: false, "\"crash\" (default: SIGKILL) or an errno the write fails with"),
                RuleKey.loseUnsynced]
        case .corrupt:
            RuleKey.targeting + [
                RuleKey("byte", .number, blkdebug: false, "offset in the bytes read of the byte to alter (with xor)"),
                RuleKey("xor", .number, blkdebug: false, "mask XORed into that byte (0x01 to 0xff)"),
                RuleKey("entry", .number, blkdebug: false, "index of the table entry to replace in the read (l2_load, reftable_load: 8 bytes; refblock_load: refcount_bits)"),
                RuleKey("field", .string, blkdebug: false, "a qcow2 header field by name (incompatible_features, l1_table_offset, ...) to replace in any read of the header; event then optional"),
                RuleKey("set", .number, blkdebug: false, "the value written into that entry or field (big-endian)")]
        case .breakpoint:
            RuleKey.targeting + [
                RuleKey("tag", .string, blkdebug: false, "the name `blkfault wait-break` and `blkfault resume` use")]
        }
    }

    /// The kind of `key` in this section, nil when the section has no such key: what
    /// `parameters` says, without building it (its rows' strings, for every key of every
    /// section, cost the engine's start ~23 K instructions; issue 7, s8-7a).
    /// `RuleKeyKindTests` checks it against `parameters`.
    func kind(of key: [UInt8]) -> Kind? {
        // Invalid UTF-8 decodes with U+FFFD, which no key has: no false match.
        let name = String(decoding: key, as: UTF8.self)
        switch self {
        case .setState:
            switch name {
            case "event": return .string
            case "state", "new_state": return .number
            default: return nil
            }
        case .injectError:
            switch name {
            case "errno", "delay-ns": return .number
            case "immediately": return .bool
            default: return Self.targetingKind(name)
            }
        case .crash:
            switch name {
            case "when": return .string
            case "lose-unsynced": return .bool
            default: return Self.targetingKind(name)
            }
        case .tornWrite:
            switch name {
            case "keep", "keep-sectors": return .number
            case "then": return .string
            case "lose-unsynced": return .bool
            default: return Self.targetingKind(name)
            }
        case .corrupt:
            switch name {
            case "byte", "xor", "entry", "set": return .number
            case "field": return .string
            default: return Self.targetingKind(name)
            }
        case .breakpoint:
            return name == "tag" ? .string : Self.targetingKind(name)
        }
    }

    /// `RuleKey.targeting`'s kinds.
    private static func targetingKind(_ name: String) -> Kind? {
        switch name {
        case "event", "iotype", "probability": .string
        case "state", "sector", "occurrence", "seed": .number
        case "once": .bool
        default: nil
        }
    }
}

/// One key of a section.
struct RuleKey {
    let name: String
    let kind: RuleSection.Kind
    /// Real blkdebug (QEMU 7.2) accepts it.
    let blkdebug: Bool
    let meaning: String

    init(_ name: String, _ kind: RuleSection.Kind, blkdebug: Bool, _ meaning: String) {
        (self.name, self.kind, self.blkdebug, self.meaning) = (name, kind, blkdebug, meaning)
    }

    static let event = RuleKey("event", .string, blkdebug: true, "the blkdebug event (see Events)")
    static let state = RuleKey("state", .number, blkdebug: true, "act only in this state (0 or absent: any)")
    static let iotype = RuleKey("iotype", .string, blkdebug: true, "request kind: read, write, write-zeroes, discard, flush, block-status")
    static let sector = RuleKey("sector", .number, blkdebug: true, "act only on a request covering this 512-byte sector")
    static let once = RuleKey("once", .bool, blkdebug: true, "act once, then never again")
    static let loseUnsynced = RuleKey("lose-unsynced", .bool, blkdebug: false,
                                      "power loss: before dying, undo every write to the image since its last fsync/fdatasync")

    /// The new trigger keys, accepted in [inject-error] and in every action section.
    static let triggers = [
        RuleKey("occurrence", .number, blkdebug: false, "act only on the Nth raise of the event in this process (1-based)"),
        RuleKey("probability", .string, blkdebug: false, "act on each raise with this probability (0 to 1)"),
        RuleKey("seed", .number, blkdebug: false, "seed for probability (default: BLKFAULT_SEED, else a random one); the trace shows the seed used"),
    ]

    /// What every action section accepts to aim it, as [inject-error] does.
    static let targeting = [event, state, iotype, sector, once] + triggers
}

extension RuleFile {
    /// README's syntax table: every section and key, and whether QEMU 7.2's blkdebug accepts it.
    public static var syntaxTable: String {
        RuleSection.markdownTable
    }
}

extension RuleSection {
    static var markdownTable: String {
        var text = "| section / key | meaning | real blkdebug (QEMU 7.2) |\n|---|---|---|\n"
        for section in RuleSection.allCases {
            text += "| `[\(section.rawValue)]` | \(section.meaning) | \(section.isBlkdebug ? "yes" : "**no**") |\n"
            let common = section.isBlkdebug ? [] : RuleKey.targeting.map(\.name)
            if !common.isEmpty {
                text += "| `[\(section.rawValue)]` " + common.map { "`\($0)`" }.joined(separator: " ")
                    + " | aim it, as in [inject-error] | **no** |\n"
            }
            for key in section.parameters where !common.contains(key.name) {
                let accepted = key.blkdebug && section.isBlkdebug
                text += "| `[\(section.rawValue)]` `\(key.name)` | \(key.meaning) | \(accepted ? "yes" : "**no**") |\n"
            }
        }
        return text
    }
}
