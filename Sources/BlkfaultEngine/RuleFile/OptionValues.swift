// QemuOpts value parsing (util/qemu-option.c, util/cutils.c) as QEMU 7.2 does it.

enum NumberParse: Equatable {
    case value(UInt64)
    /// `Parameter 'K' expects a number`.
    case notANumber
    /// `Value 'V' is too large for parameter 'K'`.
    case tooLarge
}

/// `qemu_strtou64(value, NULL, 0, &n)`: glibc `strtoull` with base auto-detection (`0x` hex,
/// leading `0` octal), leading whitespace and a sign allowed (a minus wraps), and the whole
/// string must be consumed. Overflow is "too large" only when nothing follows the digits.
func parseQemuNumber(_ text: [UInt8]) -> NumberParse {
    var i = 0
    while i < text.count, text[i].isCSpace { i += 1 }
    var negative = false
    if i < text.count, text[i] == UInt8(ascii: "+") || text[i] == UInt8(ascii: "-") {
        negative = text[i] == UInt8(ascii: "-")
        i += 1
    }
    var base: UInt64 = 10
    if i < text.count, text[i] == UInt8(ascii: "0") {
        // "0x" counts as a prefix only when a hex digit follows; otherwise the "0" is the number.
        if i + 2 < text.count, text[i + 1] | 0x20 == UInt8(ascii: "x"), digitValue(text[i + 2]) < 16 {
            base = 16
            i += 2
        } else {
            base = 8
        }
    }
    var result: UInt64 = 0
    var overflow = false
    let firstDigit = i
    while i < text.count, digitValue(text[i]) < base {
        let (shifted, o1) = result.multipliedReportingOverflow(by: base)
        let (sum, o2) = shifted.addingReportingOverflow(digitValue(text[i]))
        overflow = overflow || o1 || o2
        result = sum
        i += 1
    }
    if i == firstDigit || i < text.count { return .notANumber }
    if overflow { return .tooLarge }
    return .value(negative ? 0 &- result : result)
}

private func digitValue(_ byte: UInt8) -> UInt64 {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt64(byte - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt64(byte - UInt8(ascii: "A") + 10)
    default: 99
    }
}

/// `qapi_bool_parse`: exactly these spellings, case-sensitive.
func parseQemuBool(_ text: [UInt8]) -> Bool? {
    switch String(decoding: text, as: UTF8.self) {
    case "on", "yes", "true", "y": true
    case "off", "no", "false", "n": false
    default: nil
    }
}

/// `id_wellformed`: an ASCII letter, then letters, digits, `-`, `.`, `_`.
func isWellFormedID(_ id: [UInt8]) -> Bool {
    guard let first = id.first, isASCIILetter(first) else { return false }
    return id.dropFirst().allSatisfy {
        isASCIILetter($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || "-._".utf8.contains($0)
    }
}

private func isASCIILetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
}
