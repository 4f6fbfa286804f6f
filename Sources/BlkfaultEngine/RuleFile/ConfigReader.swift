/// The line loop of QEMU's config reader (qemu_config_foreach): sections, keys, and the
/// order in which QEMU notices problems. A section is validated only when the next header
/// or the end of file is reached, so a syntax error further down wins over a bad key above.
struct ConfigReader {
    let fileName: String
    /// Validated sections, in file order.
    private(set) var finished: [RuleOptions] = []
    private var current: ConfigSection?
    /// sscanf's group buffer; names the last section at end of file.
    private var group: [UInt8] = []
    /// The group of `current`, saved when its header was read.
    private var currentGroup: [UInt8] = []
    /// Things QEMU accepts silently that are probably mistakes.
    private(set) var warnings: [RuleFileWarning] = []

    init(fileName: String) { self.fileName = fileName }

    mutating func read(_ line: ConfigLine) throws(RuleFileError) {
        switch line.bytes.first {
        case newline, UInt8(ascii: "#"):
            return
        case UInt8(ascii: "["):
            let (isSection, id) = scanSectionHeader(line.bytes, group: &group)
            if isSection {
                if let previous = current {
                    finished.append(try validate(previous, group: currentGroup))
                }
                currentGroup = group
                var section = ConfigSection(headerLine: line.number)
                if let id {
                    section.put(ConfigEntry(key: Array("id".utf8), value: id, line: line.number, form: .quoted, isPiece: line.isPiece))
                }
                current = section
                return
            }
        default:
            break
        }
        guard let pair = scanKeyValue(line.bytes) else {
            throw error(line.number, "parse error", hint: Self.blankLineHint(line))
        }
        guard current != nil else {
            throw error(line.number, "no group defined",
                        hint: line.isPiece ? Hint.longLine
                            : pair.key.first == UInt8(ascii: "#") ? Hint.commentColumn
                            : "put an [inject-error] or [set-state] header before it")
        }
        if let replaced = current!.put(ConfigEntry(key: pair.key, value: pair.value, line: line.number, form: pair.form, isPiece: line.isPiece)),
           warnings.count < 100 {
            warnings.append(RuleFileWarning(fileName: fileName, line: line.number,
                message: "'\(replaced.keyText)' given again (first on line \(replaced.line)); QEMU keeps this last value"))
        }
    }

    /// End of file: QEMU validates the last section under the group buffer's name.
    mutating func finish() throws(RuleFileError) {
        if let last = current {
            finished.append(try validate(last, group: group))
            current = nil
        }
    }

    func error(_ line: Int, _ message: String, hint: String? = nil) -> RuleFileError {
        RuleFileError(fileName: fileName, line: line, message: message, hint: hint)
    }

    private static func blankLineHint(_ line: ConfigLine) -> String {
        if line.hadNul && line.bytes.allSatisfy(\.isCSpace) { return Hint.nulByte }
        if line.isPiece { return Hint.longLine }
        if line.bytes.contains(UInt8(ascii: "\r")) {
            return "a blank line with a CRLF ending is an error; QEMU skips only truly empty lines"
        }
        return "a line of only whitespace is an error; QEMU skips only truly empty lines"
    }
}
