/// Reads blkdebug configuration files exactly as QEMU 7.2 does: the same files are
/// accepted with the same meaning, the same ones rejected with the same message.
public enum RuleFile {
    /// Parses a rule file's contents. `fileName` is only used in errors.
    /// Stops at the first problem, like QEMU.
    public static func parse(_ bytes: [UInt8], fileName: String) throws(RuleFileError) -> RuleSet {
        try checkIsText(bytes, fileName: fileName)
        var reader = ConfigReader(fileName: fileName)
        for line in configLines(bytes) {
            try reader.read(line)
        }
        try reader.finish()
        return try reader.buildRuleSet()
    }

    /// QEMU would read NUL bytes and any encoding; we refuse them, so a wrong path
    /// (an image, a binary) gets a plain answer instead of a puzzling parse error.
    private static func checkIsText(_ bytes: [UInt8], fileName: String) throws(RuleFileError) {
        func lineOf(_ offset: Int) -> Int { 1 + bytes[..<offset].lazy.filter { $0 == newline }.count }
        if let nul = bytes.firstIndex(of: 0) {
            throw RuleFileError(fileName: fileName, line: lineOf(nul), message: "binary file", hint: "it contains a NUL byte")
        }
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar):
                offset += scalar.count
            case .error:
                throw RuleFileError(fileName: fileName, line: lineOf(offset), message: "binary file", hint: "it is not valid UTF-8")
            case .emptyInput:
                return
            }
        }
    }
}
