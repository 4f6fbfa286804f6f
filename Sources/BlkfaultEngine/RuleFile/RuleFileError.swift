/// Why a rule file was rejected: where, QEMU 7.2's own message, and a hint of ours.
public struct RuleFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var fileName: String
    /// 1-based line of the problem; 0 when it concerns the whole file (missing, unreadable, too large).
    public var line: Int
    /// The text QEMU's blkdebug prints for the same file (our own wording only for
    /// problems QEMU does not have: too large, binary).
    public var message: String
    /// Our advice on fixing it, if we have any.
    public var hint: String?

    public init(fileName: String, line: Int, message: String, hint: String? = nil) {
        self.fileName = fileName
        self.line = line
        self.message = message
        self.hint = hint
    }

    /// `FILE:LINE: message; hint` (no `LINE:` for whole-file problems), on one line:
    /// control characters QEMU would print raw (a value that swallowed the newline) are escaped.
    public var description: String {
        var text = line > 0 ? "\(fileName):\(line): \(Self.escaped(message))" : "\(fileName): \(Self.escaped(message))"
        if let hint { text += "; \(hint)" }
        return text
    }

    private static func escaped(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                result += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
