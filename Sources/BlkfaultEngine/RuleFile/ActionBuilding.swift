// blkfault's superset, built after blkdebug's own rules: the trigger keys of any
// section, and the action sections. Messages are ours (QEMU has none for these).

extension ConfigReader {
    /// occurrence / probability / seed; nil when the section has none of them.
    func trigger(of options: RuleOptions) throws(RuleFileError) -> Trigger? {
        var trigger = Trigger()
        if let n = options.numbers["occurrence"] {
            guard n >= 1 else {
                throw error(options.entries["occurrence"]!.line, "occurrence must be 1 or more", hint: "the first raise of the event is occurrence \"1\"")
            }
            trigger.occurrence = n
        }
        if let entry = options.entries["probability"] {
            guard entry.form == .quoted, let p = Double(entry.valueText), p >= 0, p <= 1 else {
                throw error(entry.line, "Parameter 'probability' expects a number from 0 to 1",
                            hint: Hint.forValue(entry) ?? "write a decimal like \"0.25\"")
            }
            trigger.probability = p
        }
        if let seed = options.numbers["seed"] {
            guard trigger.probability != nil else {
                throw error(options.entries["seed"]!.line, "seed without probability", hint: "seed only chooses the draws of probability")
            }
            trigger.seed = seed
        }
        return trigger == Trigger() ? nil : trigger
    }

    func actionRule(_ options: RuleOptions) throws(RuleFileError) -> ActionRule {
        let action = try action(of: options)
        var event: BlkdebugEvent?
        if case .corrupt(.field) = action, options.entries["event"] == nil {
            event = nil
        } else {
            event = try self.event(of: options)
        }
        if case .corrupt(.entry) = action, let e = event, ![.l2Load, .refblockLoad, .reftableLoad].contains(e) {
            throw error(options.entries["entry"]!.line, "entry needs a table event",
                        hint: "entry counts the entries of an L2 table (l2_load), a refcount block (refblock_load) or the refcount table (reftable_load); use byte and xor for \(e.name)")
        }
        let sector = Int64(bitPattern: options.numbers["sector"] ?? UInt64.max)
        return ActionRule(
            action: action, event: event,
            state: Int32(truncatingIfNeeded: options.numbers["state"] ?? 0),
            sectorOffset: sector == -1 ? -1 : sector &* 512,
            iotypeMask: try iotypeMask(of: options),
            once: options.bools["once"] ?? false,
            trigger: try trigger(of: options),
            line: options.headerLine,
            id: options.id.map { String(decoding: $0, as: UTF8.self) })
    }

    private func action(of options: RuleOptions) throws(RuleFileError) -> Action {
        let lose = options.bools["lose-unsynced"] ?? false
        switch options.section {
        case .crash:
            var after = false
            if let entry = options.entries["when"] {
                switch entry.valueText {
                case "before": after = false
                case "after": after = true
                default:
                    throw error(entry.line, "invalid parameter value: \(entry.valueText)",
                                hint: Hint.forValue(entry) ?? "when is \"before\" or \"after\"")
                }
            }
            return .crash(after: after, loseUnsynced: lose)
        case .tornWrite:
            let keep: UInt64
            switch (options.numbers["keep"], options.numbers["keep-sectors"]) {
            case (let bytes?, nil): keep = bytes
            case (nil, let sectors?):
                guard sectors < UInt64.max / 512 else {
                    throw error(options.entries["keep-sectors"]!.line, "keep-sectors is too large")
                }
                keep = sectors * 512
            case (nil, nil):
                throw error(options.headerLine, "torn-write needs keep or keep-sectors", hint: "how much of the write reaches the file, e.g. keep-sectors = \"1\"")
            case (_?, _?):
                throw error(options.entries["keep-sectors"]!.line, "give keep or keep-sectors, not both")
            }
            var then = TornEnding.crash
            if let entry = options.entries["then"], entry.valueText != "crash" {
                guard case .value(let n) = parseQemuNumber(entry.value), Int32(truncatingIfNeeded: n) > 0 else {
                    throw error(entry.line, "invalid parameter value: \(entry.valueText)",
                                hint: Hint.forValue(entry) ?? "then is \"crash\" or a positive errno, like \"5\"")
                }
                then = .fail(errno: Int32(truncatingIfNeeded: n))
            }
            if lose, then != .crash {
                throw error(options.entries["lose-unsynced"]!.line, "lose-unsynced needs then = \"crash\"", hint: "unsynced writes are lost only when the process dies")
            }
            return .tornWrite(keep: keep, then: then, loseUnsynced: lose)
        case .corrupt:
            return .corrupt(try corruptTarget(options))
        case .breakpoint:
            guard let entry = options.entries["tag"], !entry.value.isEmpty else {
                throw error(options.entries["tag"]?.line ?? options.headerLine, "break needs a tag", hint: "tag = \"NAME\" names the breakpoint for blkfault resume")
            }
            guard entry.value.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "/") }) else {
                throw error(entry.line, "tag must be printable ASCII without spaces or '/'")
            }
            return .breakpoint(tag: entry.valueText)
        case .injectError, .setState:
            fatalError("not an action section")
        }
    }

    private func corruptTarget(_ options: RuleOptions) throws(RuleFileError) -> CorruptTarget {
        let given = ["byte", "entry", "field"].filter { options.entries[$0] != nil }
        guard given.count == 1 else {
            throw error(options.headerLine, given.isEmpty ? "corrupt needs byte, entry or field" : "corrupt takes one of byte, entry, field",
                        hint: "byte + xor flips bits; entry + set or field + set replaces a value")
        }
        switch given[0] {
        case "byte":
            guard let mask = options.numbers["xor"], mask >= 1, mask <= 0xff else {
                throw error(options.entries["xor"]?.line ?? options.headerLine, "byte needs xor from 0x01 to 0xff")
            }
            if let extra = options.entries["set"] { throw error(extra.line, "set goes with entry or field, not byte") }
            return .byte(offset: options.numbers["byte"]!, xor: UInt8(mask))
        default:
            guard let value = options.numbers["set"] else {
                throw error(options.headerLine, "\(given[0]) needs set", hint: "set = \"0x...\" is the value written in")
            }
            if let extra = options.entries["xor"] { throw error(extra.line, "xor goes with byte, not \(given[0])") }
            if given[0] == "entry" { return .entry(index: options.numbers["entry"]!, value: value) }
            let entry = options.entries["field"]!
            guard let field = Qcow2HeaderField(name: entry.valueText) else {
                throw error(entry.line, "unknown header field '\(entry.valueText)'",
                            hint: didYouMean(entry.valueText, among: Qcow2HeaderField.all.map(\.name)) ?? "fields are named as in docs/interop/qcow2.txt")
            }
            return .field(field, value: value)
        }
    }
}
