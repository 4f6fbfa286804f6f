// Our advice appended to QEMU's messages. Only the error path runs this.

/// "did you mean 'x'?" for the known name closest to `text`, if one is close enough.
func didYouMean(_ text: String, among names: [String]) -> String? {
    let typed = Array(text.lowercased().utf8)
    var best: (name: String, distance: Int)?
    for name in names {
        let distance = editDistance(typed, Array(name.lowercased().utf8))
        if distance < best?.distance ?? .max { best = (name, distance) }
    }
    guard let best, best.distance <= max(2, best.name.utf8.count / 3) else { return nil }
    if best.distance == 0 { return "names are case-sensitive: did you mean '\(best.name)'?" }
    return "did you mean '\(best.name)'?"
}

/// Levenshtein distance.
private func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
        current[0] = i
        for j in 0..<b.count {
            current[j + 1] = min(previous[j] + (a[i - 1] == b[j] ? 0 : 1), previous[j + 1] + 1, current[j] + 1)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

enum Hint {
    static let quoteValues = "values must be in double quotes: key = \"value\""
    static let closeQuote = "the closing double quote is missing, so the value runs to the end of the line"
    static let nulByte = "the line starts with a NUL byte; QEMU's parser stops reading a line at a NUL"
    static let longLine = "QEMU reads at most 1023 characters of a line and parses the rest as a new line"
    static let commentColumn = "'#' starts a comment only in the first column"
    static let identifiers = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."

    /// Advice on a value that QEMU rejected, based on how it was written.
    static func forValue(_ entry: ConfigEntry) -> String? {
        if entry.isPiece { return longLine }
        switch entry.form {
        case .unquoted, .noEquals: return quoteValues
        case .unterminated: return closeQuote
        case .quoted: return nil
        }
    }
}
