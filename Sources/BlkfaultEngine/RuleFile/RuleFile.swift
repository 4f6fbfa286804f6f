/// Reads blkdebug configuration files exactly as QEMU 7.2 does: the same files are
/// accepted with the same meaning, the same ones rejected with the same message.
public enum RuleFile {
    /// Parses a rule file's contents. `fileName` is only used in errors.
    /// Stops at the first problem, like QEMU.
    /// QEMU reads NUL bytes and any encoding (a NUL ends what sscanf sees of a line), so
    /// they are accepted or rejected exactly as QEMU does; when such a file is rejected,
    /// the hint says it looks binary (a wrong path: an image, an executable).
    public static func parse(_ bytes: [UInt8], fileName: String) throws(RuleFileError) -> RuleSet {
        try parse(bytes, fileName: fileName, warn: false).rules
    }

    /// `parse`, plus warnings for what QEMU accepts silently but is probably a mistake
    /// (a repeated key, an empty file, new_state 0, binary content): `blkfault validate`
    /// prints them; the preload, like QEMU, does not.
    public static func parseWithWarnings(_ bytes: [UInt8], fileName: String) throws(RuleFileError)
        -> (rules: RuleSet, warnings: [RuleFileWarning]) {
        try parse(bytes, fileName: fileName, warn: true)
    }

    private static func parse(_ bytes: [UInt8], fileName: String, warn: Bool) throws(RuleFileError)
        -> (rules: RuleSet, warnings: [RuleFileWarning]) {
        do {
            var reader = ConfigReader(fileName: fileName)
            for line in configLines(bytes) {
                try reader.read(line)
            }
            try reader.finish()
            let rules = try reader.buildRuleSet()
            guard warn else { return (rules, []) }
            var warnings = reader.warnings
            if rules.isEmpty {
                warnings.append(RuleFileWarning(fileName: fileName, line: 0,
                    message: "no rules: QEMU accepts a file without sections, and nothing is injected"))
            }
            for rule in rules.setStateRules where rule.newState == 0 {
                warnings.append(RuleFileWarning(fileName: fileName, line: rule.line,
                    message: "new_state \"0\": QEMU accepts it, but in state 0 only rules without a state (or state 0) match"))
            }
            if let why = binaryHint(bytes) {
                warnings.append(RuleFileWarning(fileName: fileName, line: 0, message: why + "; QEMU reads it anyway"))
            }
            return (rules, warnings)
        } catch {
            var error = error
            if let why = binaryHint(bytes) { error.hint = why }
            throw error
        }
    }

    /// Why the file does not look like text, if it does not: the first NUL byte or
    /// invalid UTF-8 sequence (looked for in the first MiB), with its line.
    public static func binaryHint(_ bytes: [UInt8]) -> String? {
        let head = bytes.prefix(1 << 20)
        func lineOf(_ offset: Int) -> Int { 1 + head[..<offset].lazy.filter { $0 == newline }.count }
        if let nul = head.firstIndex(of: 0) {
            return "this looks like a binary file, not a rule file (a NUL byte on line \(lineOf(nul)))"
        }
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = head.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar):
                offset += scalar.count
            case .error:
                return "this looks like a binary file, not a rule file (invalid UTF-8 on line \(lineOf(offset)))"
            case .emptyInput:
                return nil
            }
        }
    }
}

/// Something a rule file does that QEMU accepts but is probably not meant.
public struct RuleFileWarning: Sendable, Equatable, CustomStringConvertible {
    public var fileName: String
    /// 1-based line; 0 for the file as a whole.
    public var line: Int
    public var message: String
    public init(fileName: String, line: Int, message: String) {
        self.fileName = fileName; self.line = line; self.message = message
    }
    public var description: String {
        (line > 0 ? "\(fileName):\(line): " : "\(fileName): ") + "warning: " + message
    }
}
