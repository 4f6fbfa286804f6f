import Glibc

// QEMU's `-readconfig` line syntax (util/qemu-config.c, qemu_config_foreach), emulated
// byte for byte: it reads with fgets into a 1024-byte buffer and recognises lines with
// two sscanf formats each, and every quirk of the format follows from those.

/// One line as QEMU sees it: at most 1023 bytes, newline included when it fits, so a
/// longer physical line arrives as several lines. fgets reads NUL bytes like any other,
/// but sscanf stops at the first one: `bytes` ends there (a NUL in column 0 leaves an
/// empty line, which is a parse error, as in QEMU).
struct ConfigLine {
    var bytes: ArraySlice<UInt8>
    /// The line contained a NUL byte (cut there).
    var hadNul = false
    /// Physical line (1-based) this piece starts on.
    var number: Int
    /// Part of a physical line longer than 1023 bytes.
    var isPiece: Bool
}

let qemuLineLimit = 1023
let newline = UInt8(ascii: "\n")
let doubleQuote = UInt8(ascii: "\"")

/// The lines of a file one at a time (a rule file may be 100 MB of comments: no array of them).
struct ConfigLines: Sequence, IteratorProtocol {
    let bytes: [UInt8]
    var start = 0
    var number = 1
    var continuesPrevious = false

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func next() -> ConfigLine? {
        guard start < bytes.count else { return nil }
        // memchr, not a byte loop: a 100 MB file must parse quickly even in a debug build.
        let limit = Swift.min(bytes.count - start, qemuLineLimit)
        let (end, nul): (Int, Int?) = bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress! + start
            let lineEnd = memchr(base, Int32(newline), limit).map { UnsafeRawPointer($0) - base + 1 } ?? limit
            let zero = memchr(base, 0, lineEnd).map { UnsafeRawPointer($0) - base }
            return (start + lineEnd, zero.map { start + $0 })
        }
        let endsLine = bytes[end - 1] == newline || end == bytes.count
        let line = ConfigLine(bytes: bytes[start..<(nul ?? end)], hadNul: nul != nil, number: number,
                              isPiece: continuesPrevious || !endsLine)
        continuesPrevious = !endsLine
        if bytes[end - 1] == newline { number += 1 }
        start = end
        return line
    }
}

func configLines(_ bytes: [UInt8]) -> ConfigLines { ConfigLines(bytes) }

extension UInt8 {
    /// C `isspace` in the C locale.
    var isCSpace: Bool { self == 0x20 || (0x09...0x0d).contains(self) }
}

/// A cursor over one line with the matching rules of sscanf directives.
private struct Scanner {
    let line: ArraySlice<UInt8>
    var position: Int

    init(_ line: ArraySlice<UInt8>, from offset: Int = 0) {
        self.line = line
        position = line.startIndex + offset
    }

    var atEnd: Bool { position >= line.endIndex }

    /// A whitespace directive: skips any amount, including none.
    mutating func skipSpace() {
        while !atEnd, line[position].isCSpace { position += 1 }
    }

    /// A literal character; false on mismatch or end of input.
    mutating func literal(_ byte: UInt8) -> Bool {
        guard !atEnd, line[position] == byte else { return false }
        position += 1
        return true
    }

    /// `%Ns` (skips leading whitespace) or `%N[...]` (does not); nil when nothing matched.
    mutating func run(max: Int, while accepts: (UInt8) -> Bool) -> [UInt8]? {
        let start = position
        while !atEnd, position - start < max, accepts(line[position]) { position += 1 }
        return position > start ? Array(line[start..<position]) : nil
    }

    mutating func word(max: Int) -> [UInt8]? {
        skipSpace()
        return run(max: max) { !$0.isCSpace }
    }
}

/// A line starting with `[`: QEMU tries `[%63s "%63[^"]"]` (section with id), then
/// `[%63[^]]]` (plain section). Both write the group buffer as they go, even when the
/// line ends up not starting a section (`[]`), and QEMU names the file's last section
/// from that buffer, so the caller owns it.
func scanSectionHeader(_ line: ArraySlice<UInt8>, group: inout [UInt8]) -> (isSection: Bool, id: [UInt8]?) {
    var scanner = Scanner(line, from: 1)
    if let name = scanner.word(max: 63) {
        group = name
        scanner.skipSpace()
        if scanner.literal(doubleQuote), let id = scanner.run(max: 63, while: { $0 != doubleQuote }) {
            return (true, id)
        }
    }
    scanner = Scanner(line, from: 1)
    if let name = scanner.run(max: 63, while: { $0 != UInt8(ascii: "]") }) {
        group = name
        return (true, nil)
    }
    return (false, nil)
}

/// How a value was written; QEMU does not care, our hints do.
enum ValueForm: Sendable {
    /// `key = "value"`.
    case quoted
    /// `key = "value` with no closing quote: the value runs to the end of the line, newline included.
    case unterminated
    /// `key = value` or `key = 'value'`: QEMU silently takes the empty string.
    case unquoted
    /// No `=` after the key (`key`, `key="v"`): the value is empty.
    case noEquals
}

struct KeyValue {
    var key: [UInt8]
    var value: [UInt8]
    var form: ValueForm
}

/// `sscanf(line, " %63s = \"%1023[^\"]\"", key, value) == 2 || sscanf(line, " %63s = \"\"", key) == 1`:
/// any line with a non-blank word is accepted, the value is empty unless quoted. Nil for a blank line.
func scanKeyValue(_ line: ArraySlice<UInt8>) -> KeyValue? {
    var scanner = Scanner(line)
    guard let key = scanner.word(max: 63) else { return nil }
    scanner.skipSpace()
    guard scanner.literal(UInt8(ascii: "=")) else { return KeyValue(key: key, value: [], form: .noEquals) }
    scanner.skipSpace()
    guard scanner.literal(doubleQuote) else { return KeyValue(key: key, value: [], form: .unquoted) }
    let value = scanner.run(max: 1023) { $0 != doubleQuote } ?? []
    return KeyValue(key: key, value: value, form: scanner.atEnd ? .unterminated : .quoted)
}
