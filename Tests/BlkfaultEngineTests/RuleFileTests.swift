import Glibc
import Testing
@testable import BlkfaultEngine

// Every message and every accept/reject decision below was produced by the installed
// QEMU 7.2.22 (`qemu-io -f qcow2 -c 'write 0 4k' blkdebug:CFG:IMG` on a fresh image): the
// whole `errorCases` table, and for the accepted files the errno QEMU then reported
// (hex/octal/whitespace/sign/truncation, errno -5 and -1 succeeding, last key wins, ids,
// text after `]` and after the closing quote, CRLF lines, `[inject-error` at end of file).
// QEMU prints no location; the line numbers are ours.

private let E = "event = \"l1_update\"\n"

private func parse(_ text: String) throws(RuleFileError) -> RuleSet {
    try RuleFile.parse(Array(text.utf8), fileName: "t.cfg")
}

private func rejection(_ text: String) -> RuleFileError? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error
    }
}

private func onlyInjectRule(_ text: String) throws -> InjectRule {
    let rules = try parse(text)
    try #require(rules.injectRules.count == 1)
    return rules.injectRules[0]
}

struct ErrorCase: Sendable, CustomTestStringConvertible {
    let name: String
    let config: String
    let line: Int
    let message: String
    init(_ name: String, _ config: String, _ line: Int, _ message: String) {
        (self.name, self.config, self.line, self.message) = (name, config, line, message)
    }
    var testDescription: String { name }
}

private let errorCases: [ErrorCase] = [
    ErrorCase("whitespace-only line", "[inject-error]\n" + E + "  \t\n", 3, "parse error"),
    ErrorCase("CRLF blank line", "[inject-error]\r\nevent = \"l1_update\"\r\n\r\n", 3, "parse error"),
    ErrorCase("whitespace-only last line without newline", "[inject-error]\n" + E + "   ", 3, "parse error"),
    ErrorCase("hash not in column 0 before any section", " # note\n[inject-error]\n" + E, 1, "no group defined"),
    ErrorCase("hash not in column 0 inside a section", "[inject-error]\n" + E + "  # note\n", 3, "Invalid parameter '#'"),
    ErrorCase("key before any section", E + "[inject-error]\n", 1, "no group defined"),
    ErrorCase("unknown section", "[x]\n" + E, 1, "There is no option group 'x'"),
    ErrorCase("sections are case-sensitive", "[Inject-Error]\n" + E, 1, "There is no option group 'Inject-Error'"),
    ErrorCase("space after bracket", "[ inject-error]\n" + E, 1, "There is no option group ' inject-error'"),
    ErrorCase("empty id", "[inject-error \"\"]\n" + E, 1, "There is no option group 'inject-error \"\"'"),
    ErrorCase("id without space", "[inject-error\"a\"]\n" + E, 1, "There is no option group 'inject-error\"a\"'"),
    ErrorCase("missing closing bracket", "[inject-error\n" + E, 1, "There is no option group 'inject-error\n'"),
    ErrorCase("group name cut at 63", "[" + String(repeating: "A", count: 70) + "]\n" + E, 1, "There is no option group '" + String(repeating: "A", count: 63) + "'"),
    ErrorCase("empty brackets at end of file name the section", "[inject-error]\n" + E + "[]\n", 1, "There is no option group ']'"),
    ErrorCase("empty brackets before a header are a key", "[inject-error]\n" + E + "[]\n[set-state]\n" + E, 3, "Invalid parameter '[]'"),
    ErrorCase("lone bracket at end of file", "[inject-error]\n" + E + "[", 3, "Invalid parameter '['"),
    ErrorCase("lone bracket, no section", "[", 1, "no group defined"),
    ErrorCase("duplicate id", "[inject-error \"a\"]\n" + E + "[inject-error \"a\"]\n" + E, 3, "Duplicate ID 'a' for inject-error"),
    ErrorCase("duplicate id set-state", "[set-state \"a\"]\n" + E + "[set-state \"a\"]\n" + E, 3, "Duplicate ID 'a' for set-state"),
    ErrorCase("duplicate id from key", "[inject-error]\n" + E + "id = \"x\"\n[inject-error \"x\"]\n" + E, 4, "Duplicate ID 'x' for inject-error"),
    ErrorCase("id cut at 63", "[inject-error \"b" + String(repeating: "A", count: 70) + "\"]\n" + E + "[inject-error \"b" + String(repeating: "A", count: 62) + "C\"]\n" + E, 3, "Duplicate ID 'b" + String(repeating: "A", count: 62) + "' for inject-error"),
    ErrorCase("bad id", "[inject-error \"1a\"]\n" + E, 1, "Parameter 'id' expects an identifier"),
    ErrorCase("empty id key", "[inject-error]\n" + E + "id = \"\"\n", 3, "Parameter 'id' expects an identifier"),
    ErrorCase("id missing closing quote", "[inject-error \"a\n" + E, 1, "Parameter 'id' expects an identifier"),
    ErrorCase("duplicate id wins over bad key", "[inject-error \"a\"]\n" + E + "[inject-error \"a\"]\nfoo = \"1\"\n" + E, 3, "Duplicate ID 'a' for inject-error"),
    ErrorCase("equals touching key", "[inject-error]\nevent=\"l1_update\"\n", 2, "Invalid parameter 'event=\"l1_update\"'"),
    ErrorCase("equals touching key, space after", "[inject-error]\nevent= \"l1_update\"\n", 2, "Invalid parameter 'event='"),
    ErrorCase("key cut at 63", "[inject-error]\n" + E + String(repeating: "A", count: 70) + " = \"x\"\n", 3, "Invalid parameter '" + String(repeating: "A", count: 63) + "'"),
    ErrorCase("unknown key", "[inject-error]\n" + E + "foo = \"1\"\n", 3, "Invalid parameter 'foo'"),
    ErrorCase("keys are case-sensitive", "[inject-error]\nEVENT = \"l1_update\"\n", 2, "Invalid parameter 'EVENT'"),
    ErrorCase("errno in set-state", "[set-state]\n" + E + "errno = \"5\"\n", 3, "Invalid parameter 'errno'"),
    ErrorCase("new_state in inject-error", "[inject-error]\n" + E + "new_state = \"2\"\n", 3, "Invalid parameter 'new_state'"),
    ErrorCase("iotype in set-state", "[set-state]\n" + E + "iotype = \"read\"\n", 3, "Invalid parameter 'iotype'"),
    ErrorCase("unknown event", "[inject-error]\nevent = \"l1_updat\"\n", 2, "invalid parameter value: l1_updat"),
    ErrorCase("old dotted event name", "[inject-error]\nevent = \"l1_grow.alloc_table\"\n", 2, "invalid parameter value: l1_grow.alloc_table"),
    ErrorCase("events are case-sensitive", "[inject-error]\nevent = \"L1_UPDATE\"\n", 2, "invalid parameter value: L1_UPDATE"),
    ErrorCase("unquoted value is empty", "[inject-error]\nevent = l1_update\n", 2, "invalid parameter value: "),
    ErrorCase("single-quoted value is empty", "[inject-error]\nevent = 'l1_update'\n", 2, "invalid parameter value: "),
    ErrorCase("empty value", "[inject-error]\nevent = \"\"\n", 2, "invalid parameter value: "),
    ErrorCase("missing closing quote keeps the newline", "[inject-error]\nevent = \"l1_update\n", 2, "invalid parameter value: l1_update\n"),
    ErrorCase("unknown iotype", "[inject-error]\n" + E + "iotype = \"readd\"\n", 3, "invalid parameter value: readd"),
    ErrorCase("iotype takes one value", "[inject-error]\n" + E + "iotype = \"read,write\"\n", 3, "invalid parameter value: read,write"),
    ErrorCase("missing event", "[inject-error]\nerrno = \"5\"\n", 1, "Missing event name for rule"),
    ErrorCase("empty trailing section", "[inject-error]\n" + E + "[inject-error]\n", 3, "Missing event name for rule"),
    ErrorCase("missing event set-state", "[set-state]\nnew_state = \"2\"\n", 1, "Missing event name for rule"),
    ErrorCase("inject rules are checked before set-state rules", "[set-state]\nnew_state = \"2\"\n[inject-error]\nevent = \"bad\"\n", 4, "invalid parameter value: bad"),
    ErrorCase("event checked before iotype", "[inject-error]\nevent = \"bad\"\niotype = \"bad2\"\n", 2, "invalid parameter value: bad"),
    ErrorCase("event names are checked after all keys", "[inject-error]\nevent = \"bad\"\n[set-state]\nfoo = \"1\"\n", 4, "Invalid parameter 'foo'"),
    ErrorCase("parse error below a bad key wins", "[inject-error]\nfoo = \"1\"\n  \n", 3, "parse error"),
    ErrorCase("bad key wins once its section is closed", "[inject-error]\nfoo = \"1\"\n[set-state]\n  \n", 2, "Invalid parameter 'foo'"),
    ErrorCase("keys are checked in QDict order (errno before foo)", "[inject-error]\nfoo = \"1\"\nerrno = \"x\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("same bucket: newest key first (b)", "[inject-error]\nsector = \"x\"\nb = \"1\"\n", 3, "Invalid parameter 'b'"),
    ErrorCase("same bucket: newest key first (sector)", "[inject-error]\nb = \"1\"\nsector = \"x\"\n", 3, "Parameter 'sector' expects a number"),
    ErrorCase("replaced key keeps its place", "[inject-error]\nb = \"1\"\nsector = \"x\"\nb = \"2\"\n", 3, "Parameter 'sector' expects a number"),
    ErrorCase("once before state", "[inject-error]\nonce = \"x\"\nstate = \"x\"\n", 2, "Parameter 'once' expects 'on' or 'off'"),
    ErrorCase("number trailing space", "[inject-error]\n" + E + "errno = \"28 \"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number trailing garbage", "[inject-error]\n" + E + "errno = \"5x\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number empty", "[inject-error]\n" + E + "errno = \"\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number unquoted", "[inject-error]\n" + E + "errno = 28\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number blank", "[inject-error]\n" + E + "errno = \" \"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number 0x alone", "[inject-error]\n" + E + "errno = \"0x\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number octal 09", "[inject-error]\n" + E + "errno = \"09\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number 1e3", "[inject-error]\n" + E + "errno = \"1e3\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number space after sign", "[inject-error]\n" + E + "errno = \"- 5\"\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number missing closing quote", "[inject-error]\n" + E + "errno = \"5\n", 3, "Parameter 'errno' expects a number"),
    ErrorCase("number too large", "[inject-error]\n" + E + "errno = \"18446744073709551616\"\n", 3, "Value '18446744073709551616' is too large for parameter 'errno'"),
    ErrorCase("negative number too large", "[inject-error]\n" + E + "sector = \"-" + String(repeating: "9", count: 20) + "\"\n", 3, "Value '-" + String(repeating: "9", count: 20) + "' is too large for parameter 'sector'"),
    ErrorCase("overflow with garbage is not a number", "[inject-error]\n" + E + "state = \"" + String(repeating: "9", count: 20) + "x\"\n", 3, "Parameter 'state' expects a number"),
    ErrorCase("new_state not a number", "[set-state]\n" + E + "new_state = \"two\"\n", 3, "Parameter 'new_state' expects a number"),
    ErrorCase("bool uppercase", "[inject-error]\n" + E + "once = \"ON\"\n", 3, "Parameter 'once' expects 'on' or 'off'"),
    ErrorCase("bool empty", "[inject-error]\n" + E + "immediately = \"\"\n", 3, "Parameter 'immediately' expects 'on' or 'off'"),
    ErrorCase("bool 1", "[inject-error]\n" + E + "once = \"1\"\n", 3, "Parameter 'once' expects 'on' or 'off'"),
    ErrorCase("long line split: whitespace-only first piece", "[inject-error]\n" + String(repeating: " ", count: 1023) + "errno = \"x\"\n", 2, "parse error"),
    ErrorCase("long line split: value cut", "[inject-error]\n" + String(repeating: " ", count: 1015) + E, 2, "Invalid parameter '\"l1_update\"'"),
    ErrorCase("long line split: tail is a key", "[inject-error]\n" + String(repeating: " ", count: 1022) + "X\n" + E, 2, "Invalid parameter 'X'"),
    ErrorCase("long comment line: tail is parsed", "[inject-error]\n" + String(repeating: "#", count: 1023) + "errno = \"x\"\n" + E, 2, "Parameter 'errno' expects a number"),
    ErrorCase("line numbers count physical lines", "[inject-error]\n" + String(repeating: "#", count: 2100) + "\n\nfoo = \"1\"\n" + E, 4, "Invalid parameter 'foo'"),
]

@Suite struct RuleFileErrorTests {
    @Test(arguments: errorCases)
    func rejectedWithQEMUsMessage(_ c: ErrorCase) {
        let error = rejection(c.config)
        #expect(error?.message == c.message)
        #expect(error?.line == c.line)
        #expect(error?.fileName == "t.cfg")
    }

    @Test func descriptionIsFileLineMessageHint() {
        let error = rejection("[inject-error]\nevent = \"l1_updat\"\n")
        #expect(error?.description == "t.cfg:2: invalid parameter value: l1_updat; did you mean 'l1_update'?")
        let plain = RuleFileError(fileName: "r.cfg", line: 0, message: "file is larger than 1 MiB")
        #expect(plain.description == "r.cfg: file is larger than 1 MiB")
        // The message keeps QEMU's newline; the description stays on one line.
        let unterminated = rejection("[inject-error]\nevent = \"l1_update\n")
        #expect(unterminated?.message == "invalid parameter value: l1_update\n")
        #expect(unterminated?.description == "t.cfg:2: invalid parameter value: l1_update\\n; \(Hint.closeQuote)")
    }

    @Test func hints() {
        func hint(_ text: String) -> String? { rejection(text)?.hint }
        #expect(hint("[inject-error]\nevent = \"l1_grow.alloc_table\"\n") == "did you mean 'l1_grow_alloc_table'?")
        #expect(hint("[inject-error]\nevent = \"L1_UPDATE\"\n") == "names are case-sensitive: did you mean 'l1_update'?")
        #expect(hint("[inject-error]\nevent = l1_update\n") == Hint.quoteValues)
        #expect(hint("[inject-error]\n" + E + "errno = 28\n") == Hint.quoteValues)
        #expect(hint("[inject-error]\nevent = \"l1_update\n") == Hint.closeQuote)
        #expect(hint("[inject-error]\n" + E + "iotype = \"wrtie\"\n") == "did you mean 'write'?")
        #expect(hint("[inject-error]\n" + E + "once = \"ON\"\n") == "names are case-sensitive: did you mean 'on'?")
        #expect(hint("[inject-error]\n" + E + "  \n")?.contains("only whitespace") == true)
        #expect(hint("[inject-error]\r\n\r\n")?.contains("CRLF") == true)
        #expect(hint("[inject-error]\n" + E + "  # note\n") == Hint.commentColumn)
        #expect(hint(" # note\n") == Hint.commentColumn)
        #expect(hint("[inject-error]\nevent=\"l1_update\"\n")?.contains("space between the key and '='") == true)
        #expect(hint("[set-state]\n" + E + "errno = \"5\"\n") == "'errno' belongs in [inject-error], not in [set-state]")
        #expect(hint("[inject-error]\n" + E + "sectr = \"5\"\n") == "did you mean 'sector'?")
        #expect(hint("[inject_error]\n" + E) == "did you mean 'inject-error'?")
        #expect(hint("[inject-error\n" + E) == "the closing ']' is missing")
        #expect(hint("[inject-error \"1a\"]\n" + E) == Hint.identifiers)
        #expect(hint("[inject-error \"a\"]\n" + E + "[inject-error \"a\"]\n" + E) == "first used on line 1")
        #expect(hint("[inject-error]\n" + String(repeating: " ", count: 1015) + E) == Hint.longLine)
    }

    // QEMU 7.2 reads NUL bytes and any encoding: fgets keeps them, sscanf stops at a NUL.
    // Checked with qemu-io blkdebug: a NUL after a quoted value and Latin-1 in a comment are
    // accepted; a NUL in column 0 is a parse error. A rejected binary file gets a hint.
    @Test func nulAndNonUTF8AreReadAsQEMUReadsThem() throws {
        let afterValue = try parse("[inject-error]\nevent = \"l1_update\"\0junk\nerrno = \"28\"\n")
        #expect(afterValue.injectRules.first?.errno == 28)
        let latin1 = try RuleFile.parse(Array("# caf".utf8) + [0xe9, 0x20, 0, 0x0a] + Array(("[inject-error]\n" + E).utf8), fileName: "b")
        #expect(latin1.injectRules.count == 1)
        let atStart = rejection("[inject-error]\n\0" + E)
        #expect(atStart?.line == 2)
        #expect(atStart?.message == "parse error")
        #expect(atStart?.hint == "this looks like a binary file, not a rule file (a NUL byte on line 2)")
        do {
            _ = try RuleFile.parse([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0x0a, 0xff], fileName: "b")
            Issue.record("accepted an ELF header")
        } catch {
            #expect(error.message == "no group defined")
            #expect(error.line == 1)
        }
        do {
            _ = try RuleFile.parse(Array(("[inject-error]\n" + E).utf8) + [0x78, 0xff, 0x0a], fileName: "b")
            Issue.record("accepted an unknown key")
        } catch {
            #expect(error.line == 3)
            #expect(error.hint == "this looks like a binary file, not a rule file (invalid UTF-8 on line 3)")
        }
    }
}

@Suite struct RuleFileAcceptTests {
    @Test func emptyFilesAndComments() throws {
        #expect(try parse("").isEmpty)
        #expect(try parse("\n\n# comment\n#[x]\n\n").isEmpty)
    }

    @Test func injectDefaults() throws {
        let rule = try onlyInjectRule("[inject-error]\n" + E)
        #expect(rule == InjectRule(event: .l1Update, state: 0, errno: 5, sectorOffset: -1, once: false,
                                   immediately: false, iotypeMask: [.read, .write, .writeZeroes, .discard, .flush],
                                   line: 1, index: 0, id: nil))
    }

    @Test func setStateDefaults() throws {
        let rules = try parse("# c\n[set-state]\nevent = \"write_aio\"\n")
        #expect(rules.setStateRules == [SetStateRule(event: .writeAio, state: 0, newState: 0, line: 2)])
    }

    @Test func everyInjectOption() throws {
        let rule = try onlyInjectRule("""
            [inject-error "r1"]
            event = "cluster_alloc"
            state = "2"
            errno = "28"
            sector = "136"
            once = "on"
            immediately = "yes"
            iotype = "flush"

            """)
        #expect(rule == InjectRule(event: .clusterAlloc, state: 2, errno: 28, sectorOffset: 136 * 512, once: true,
                                   immediately: true, iotypeMask: .flush, line: 1, index: 0, id: "r1"))
    }

    @Test func rulesInFileOrderWithIndexAndLine() throws {
        let rules = try parse("""
            [set-state]
            event = "l1_update"
            new_state = "2"
            [inject-error]
            event = "l2_load"
            [set-state]
            event = "l2_load"
            state = "2"
            new_state = "3"
            [inject-error]
            event = "none"

            """)
        #expect(rules.injectRules.map(\.event) == [.l2Load, .none])
        #expect(rules.injectRules.map(\.index) == [0, 1])
        #expect(rules.injectRules.map(\.line) == [4, 10])
        #expect(rules.setStateRules == [
            SetStateRule(event: .l1Update, state: 0, newState: 2, line: 1),
            SetStateRule(event: .l2Load, state: 2, newState: 3, line: 6),
        ])
    }

    @Test func lineSyntaxQuirks() throws {
        // Text after `]` and after the closing quote is ignored; `=` may touch the value;
        // tabs and leading whitespace are fine; CRLF is fine except on blank lines.
        let rule = try onlyInjectRule("[inject-error] junk\r\n  event ="
            + "\"l1_update\" # note\r\n\terrno\t=\t\"28\"junk\r\n")
        #expect(rule.event == .l1Update)
        #expect(rule.errno == 28)
    }

    @Test func lastDuplicateKeyWins() throws {
        #expect(try onlyInjectRule("[inject-error]\n" + E + "errno = \"28\"\nerrno = \"1\"\n").errno == 1)
        #expect(try onlyInjectRule("[inject-error]\nevent = \"bad\"\n" + E).event == .l1Update)
    }

    @Test func ids() throws {
        #expect(try onlyInjectRule("[ inject-error \"a\"]\n" + E).id == "a")
        #expect(try onlyInjectRule("[inject-error \"a\" junk]\n" + E).id == "a")
        #expect(try onlyInjectRule("[inject-error]\n" + E + "id = \"x\"\n").id == "x")
        #expect(try onlyInjectRule("[inject-error \"a-b.c_1\"]\n" + E).id == "a-b.c_1")
        // A key `id` replaces the header's id, so this is no duplicate.
        #expect(try parse("[inject-error \"a\"]\n" + E + "id = \"b\"\n[inject-error \"a\"]\n" + E).injectRules.map(\.id) == ["b", "a"])
        // Ids are per section kind.
        #expect(try parse("[inject-error \"a\"]\n" + E + "[set-state \"a\"]\n" + E).setStateRules.first?.id == "a")
    }

    @Test func sectionAtEndOfFileWithoutBracketOrNewline() {
        // sscanf's `[%63[^]]]` is satisfied without the `]`, so this is an [inject-error]
        // (QEMU: "Missing event name", not "no option group").
        #expect(rejection("[set-state]\n" + E + "[inject-error")?.message == "Missing event name for rule")
        #expect(rejection("[set-state]\n" + E + "[inject-error")?.line == 3)
    }

    @Test(arguments: [
        ("28", 28), ("0x1c", 28), ("0X1C", 28), ("034", 28), (" 28", 28), ("\t28", 28), ("+28", 28),
        ("0", 0), ("-5", -5), ("-1", -1), ("4294967324", 28), ("18446744073709551615", -1),
        ("-18446744073709551588", 28), ("99999", 99999),
    ] as [(String, Int32)])
    func numbersLikeStrtoull(_ text: String, _ errno: Int32) throws {
        #expect(try onlyInjectRule("[inject-error]\n" + E + "errno = \"\(text)\"\n").errno == errno)
    }

    @Test func stateAndNewStateTruncateToInt32() throws {
        #expect(try onlyInjectRule("[inject-error]\n" + E + "state = \"4294967297\"\n").state == 1)
        #expect(try onlyInjectRule("[inject-error]\n" + E + "state = \"-1\"\n").state == -1)
        let rule = try parse("[set-state]\n" + E + "state = \"0x2\"\nnew_state = \"4294967296\"\n").setStateRules[0]
        #expect(rule.state == 2)
        #expect(rule.newState == 0)
    }

    @Test(arguments: [
        ("-1", -1), ("18446744073709551615", -1), ("0", 0), ("136", 69632), ("-2", -1024),
        ("0x8000000000000000", 0),
    ] as [(String, Int64)])
    func sectorBecomesByteOffset(_ text: String, _ offset: Int64) throws {
        #expect(try onlyInjectRule("[inject-error]\n" + E + "sector = \"\(text)\"\n").sectorOffset == offset)
    }

    @Test(arguments: [("on", true), ("yes", true), ("true", true), ("y", true),
                      ("off", false), ("no", false), ("false", false), ("n", false)])
    func booleans(_ text: String, _ value: Bool) throws {
        let rule = try onlyInjectRule("[inject-error]\n" + E + "once = \"\(text)\"\nimmediately = \"\(text)\"\n")
        #expect(rule.once == value)
        #expect(rule.immediately == value)
    }

    @Test(arguments: IOType.allCases)
    func iotypes(_ type: IOType) throws {
        let rule = try onlyInjectRule("[inject-error]\n" + E + "iotype = \"\(type.name)\"\n")
        #expect(rule.iotypeMask == IOTypeMask(type))
    }

    @Test func everyEventName() throws {
        for info in BlkdebugEvent.table {
            #expect(try onlyInjectRule("[inject-error]\nevent = \"\(info.name)\"\n").event == info.event)
        }
    }

    @Test func longLinesAreReadIn1023BytePieces() throws {
        // 1023 bytes without a newline, then the newline alone: an empty line, skipped.
        let padded = String(repeating: " ", count: 1023 - 19) + "event = \"l1_update\""
        #expect(try parse("[inject-error]\n" + padded + "\n").injectRules.first?.event == .l1Update)
        // A 1023-byte comment's tail is a line of its own.
        let rules = try parse("[inject-error]\n" + E + String(repeating: "#", count: 1023) + "errno = \"7\"\n")
        #expect(rules.injectRules.first?.errno == 7)
    }
}

@Suite struct RuleFileLoadTests {
    private func temporaryFile(_ bytes: [UInt8]) throws -> String {
        var template = Array("/tmp/blkfault-rules-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        try #require(fd >= 0)
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try #require(written == bytes.count)
        return String(cString: template)
    }

    @Test func loadsAFile() throws {
        let path = try temporaryFile(Array("[inject-error]\nevent = \"l2_load\"\nerrno = \"28\"\n".utf8))
        defer { unlink(path) }
        let rules = try RuleFile.load(path: path)
        #expect(rules.injectRules.map(\.errno) == [28])
    }

    @Test func reportsParseErrorsWithThePath() throws {
        let path = try temporaryFile(Array("[inject-error]\nevent = \"x\"\n".utf8))
        defer { unlink(path) }
        #expect(throws: RuleFileError(fileName: path, line: 2, message: "invalid parameter value: x")) {
            try RuleFile.load(path: path)
        }
    }

    @Test func missingFile() {
        #expect(throws: RuleFileError(fileName: "/nonexistent/r.cfg", line: 0,
                                      message: "Could not read blkdebug config file: No such file or directory")) {
            try RuleFile.load(path: "/nonexistent/r.cfg")
        }
    }

    @Test func directory() {
        // QEMU opens it, then fgets fails with EISDIR.
        #expect(throws: RuleFileError(fileName: "/tmp", line: 0, message: "Cannot read config file: Is a directory")) {
            try RuleFile.load(path: "/tmp")
        }
    }

    @Test func binary() throws {
        let path = try temporaryFile([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3])
        defer { unlink(path) }
        do {
            _ = try RuleFile.load(path: path)
            Issue.record("accepted a binary file")
        } catch {
            #expect(error.message == "no group defined")
            #expect(error.hint?.contains("binary file") == true)
        }
    }
}
