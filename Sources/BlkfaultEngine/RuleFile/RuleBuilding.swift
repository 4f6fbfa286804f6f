// blkdebug's add_rule, run after the whole file was read: all [inject-error] sections in
// file order, then all [set-state] sections; the first bad one stops it.

extension ConfigReader {
    func buildRuleSet() throws(RuleFileError) -> RuleSet {
        var rules = RuleSet()
        for options in finished where options.section == .injectError {
            rules.injectRules.append(try injectRule(options, index: rules.injectRules.count))
        }
        for options in finished where options.section == .setState {
            rules.setStateRules.append(try setStateRule(options))
        }
        for options in finished where !options.section.isBlkdebug {
            rules.actionRules.append(try actionRule(options))
        }
        return rules
    }

    private func injectRule(_ options: RuleOptions, index: Int) throws(RuleFileError) -> InjectRule {
        let event = try event(of: options)
        // Numbers are C `int` / `int64_t` in blkdebug: truncate like C does.
        let sector = Int64(bitPattern: options.numbers["sector"] ?? UInt64.max)
        let mask = try iotypeMask(of: options)
        return InjectRule(
            event: event,
            state: Int32(truncatingIfNeeded: options.numbers["state"] ?? 0),
            errno: Int32(truncatingIfNeeded: options.numbers["errno"] ?? 5),
            sectorOffset: sector == -1 ? -1 : sector &* 512,
            once: options.bools["once"] ?? false,
            immediately: options.bools["immediately"] ?? false,
            iotypeMask: mask,
            line: options.headerLine,
            index: index,
            id: options.id.map { String(decoding: $0, as: UTF8.self) },
            trigger: try trigger(of: options),
            delayNs: options.numbers["delay-ns"] ?? 0
        )
    }

    func iotypeMask(of options: RuleOptions) throws(RuleFileError) -> IOTypeMask {
        guard let entry = options.entries["iotype"] else { return .blkdebugDefault }
        guard let type = IOType(name: entry.valueText) else {
            throw error(entry.line, "invalid parameter value: \(entry.valueText)",
                        hint: Hint.forValue(entry) ?? didYouMean(entry.valueText, among: IOType.allCases.map(\.name))
                            ?? "iotype is one of \(IOType.allCases.map(\.name).joined(separator: ", "))")
        }
        return IOTypeMask(type)
    }

    private func setStateRule(_ options: RuleOptions) throws(RuleFileError) -> SetStateRule {
        SetStateRule(
            event: try event(of: options),
            state: Int32(truncatingIfNeeded: options.numbers["state"] ?? 0),
            newState: Int32(truncatingIfNeeded: options.numbers["new_state"] ?? 0),
            line: options.headerLine,
            id: options.id.map { String(decoding: $0, as: UTF8.self) }
        )
    }

    func event(of options: RuleOptions) throws(RuleFileError) -> BlkdebugEvent {
        guard let entry = options.entries["event"] else {
            throw error(options.headerLine, "Missing event name for rule",
                        hint: "every [\(options.section.rawValue)] needs a line event = \"NAME\"")
        }
        guard let event = BlkdebugEvent(name: entry.valueText) else {
            throw error(entry.line, "invalid parameter value: \(entry.valueText)",
                        hint: Hint.forValue(entry) ?? didYouMean(entry.valueText, among: BlkdebugEvent.table.map(\.name)))
        }
        return event
    }
}
