// What QEMU does with each finished section (qemu_config_do_parse → qemu_opts_from_qdict):
// look the group up, register the id, check and type every parameter.

/// A section QemuOpts accepted. Event names and iotypes are still unchecked strings:
/// blkdebug looks at those only after the whole file is read (add_rule).
struct RuleOptions {
    var section: RuleSection
    var headerLine: Int
    var id: [UInt8]?
    var entries: ConfigSection
    var numbers = KeyedValues<UInt64>()
    var bools = KeyedValues<Bool>()
}

extension ConfigReader {
    /// Validates a finished section the way QEMU does when it meets the next header or the end of file.
    func validate(_ section: ConfigSection, group: [UInt8]) throws(RuleFileError) -> RuleOptions {
        guard let kind = RuleSection.allCases.first(where: { $0.rawValue.utf8.elementsEqual(group) }) else {
            let name = String(decoding: group, as: UTF8.self)
            throw error(section.headerLine, "There is no option group '\(name)'", hint: Self.groupHint(name))
        }
        var options = RuleOptions(section: kind, headerLine: section.headerLine, entries: section)
        if let idEntry = section["id"] {
            guard isWellFormedID(idEntry.value) else {
                throw error(idEntry.line, "Parameter 'id' expects an identifier", hint: Hint.identifiers)
            }
            if let first = finished.first(where: { $0.section == kind && $0.id == idEntry.value }) {
                throw error(idEntry.line, "Duplicate ID '\(idEntry.valueText)' for \(kind.rawValue)",
                            hint: "first used on line \(first.entries["id"]?.line ?? first.headerLine)")
            }
            options.id = idEntry.value
        }
        for entry in section.qdictOrder where !entry.key.elementsEqual("id".utf8) {
            guard let type = kind.kind(of: entry.key) else {
                throw error(entry.line, "Invalid parameter '\(entry.keyText)'", hint: Self.keyHint(entry, in: kind))
            }
            switch type {
            case .string:
                break
            case .number:
                switch parseQemuNumber(entry.value) {
                case .value(let number):
                    options.numbers[entry.keyText] = number
                case .notANumber:
                    throw error(entry.line, "Parameter '\(entry.keyText)' expects a number",
                                hint: Hint.forValue(entry) ?? "write a whole number, like \"28\", \"0x1c\" or \"-1\"")
                case .tooLarge:
                    throw error(entry.line, "Value '\(entry.valueText)' is too large for parameter '\(entry.keyText)'",
                                hint: "numbers must fit in 64 bits")
                }
            case .bool:
                guard let flag = parseQemuBool(entry.value) else {
                    throw error(entry.line, "Parameter '\(entry.keyText)' expects 'on' or 'off'",
                                hint: Hint.forValue(entry) ?? didYouMean(entry.valueText, among: ["on", "off", "yes", "no", "true", "false"])
                                    ?? "write on/off, yes/no, true/false or y/n")
                }
                options.bools[entry.keyText] = flag
            }
        }
        return options
    }

    private static func groupHint(_ name: String) -> String? {
        if name.hasSuffix("\n") { return "the closing ']' is missing" }
        if name.utf8.first?.isCSpace == true { return "no space is allowed after '['" }
        if name.contains("\"") { return "separate the id from the section name with a space: [inject-error \"id\"]" }
        return didYouMean(name, among: RuleSection.allCases.map(\.rawValue))
            ?? "the sections are [inject-error] and [set-state] (blkdebug), [crash], [torn-write], [corrupt] and [break] (blkfault)"
    }

    private static func keyHint(_ entry: ConfigEntry, in section: RuleSection) -> String? {
        let key = entry.keyText
        if entry.isPiece { return Hint.longLine }
        if key.hasPrefix("#") { return Hint.commentColumn }
        if key.contains("=") { return "put a space between the key and '=': key = \"value\"" }
        if let other = RuleSection.allCases.first(where: { $0 != section && $0.kind(of: entry.key) != nil }) {
            return "'\(key)' belongs in [\(other.rawValue)], not in [\(section.rawValue)]"
        }
        return didYouMean(key, among: section.parameters.map(\.name))
    }
}

/// A section's values of one type by key, as `[String: Value]` reads and writes them: a
/// section has a few keys, so a scan. Not a Dictionary, whose storage metadata and first
/// growth cost the engine's start ~18 K instructions (issue 7, s8-7a).
struct KeyedValues<Value> {
    private var keys: [String] = []
    private var values: [Value] = []

    subscript(key: String) -> Value? {
        get {
            for i in keys.indices where keys[i] == key { return values[i] }
            return nil
        }
        set {
            let at = keys.firstIndex(of: key)
            switch (at, newValue) {
            case (let i?, let v?): values[i] = v
            case (let i?, nil): keys.remove(at: i); values.remove(at: i)
            case (nil, let v?): keys.append(key); values.append(v)
            case (nil, nil): break
            }
        }
    }
}
