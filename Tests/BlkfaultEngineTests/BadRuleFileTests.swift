import Glibc
import Testing
@testable import BlkfaultEngine

// A corpus of bad rule files. Each was first given to the installed QEMU 7.2.22
// (`qemu-io -c 'write 0 4k' blkdebug:CFG:IMG`): where QEMU rejects a file, blkfault
// rejects it with QEMU's message at FILE:LINE; where QEMU accepts it, so does blkfault,
// and `parseWithWarnings` (what `blkfault validate` prints) says what looks wrong.

private func file(_ bytes: [UInt8]) throws -> String {
    var template = Array("/tmp/blkfault-badrules-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    try #require(fd >= 0)
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, min($0.count, 1 << 24)) }
        try #require(n > 0)
        done += n
    }
    return String(cString: template)
}

struct BadRuleCase: Sendable, CustomTestStringConvertible {
    let name: String
    let text: [UInt8]
    let line: Int
    let message: String
    var testDescription: String { name }
    init(_ name: String, _ text: String, _ line: Int, _ message: String) {
        self.init(name, Array(text.utf8), line, message)
    }
    init(_ name: String, _ bytes: [UInt8], _ line: Int, _ message: String) {
        (self.name, self.text, self.line, self.message) = (name, bytes, line, message)
    }
}

/// Rejected by QEMU with these messages (line numbers are ours; QEMU prints none).
private let rejected: [BadRuleCase] = [
    BadRuleCase("unknown event", "[inject-error]\nevent = \"no_such_event\"\nerrno = \"5\"\n", 2, "invalid parameter value: no_such_event"),
    BadRuleCase("unknown key", "[inject-error]\nevent = \"l1_update\"\nflavour = \"5\"\n", 3, "Invalid parameter 'flavour'"),
    BadRuleCase("bad errno", "[inject-error]\nevent = \"l1_update\"\nerrno = \"eio\"\n", 3, "Parameter 'errno' expects a number"),
    BadRuleCase("unterminated quote", "[inject-error]\nevent = \"l1_update\"\nerrno = \"5\n", 3, "Parameter 'errno' expects a number"),
    BadRuleCase("binary file (an ELF header)", [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0x0a, 0xff, 0xfe], 1, "no group defined"),
    BadRuleCase("NUL in column 0", "[inject-error]\n\0event = \"l1_update\"\n", 2, "parse error"),
]

/// Accepted by QEMU (the write went through or failed as the rule says); blkfault must
/// accept them too, and warns.
private let acceptedWithWarning: [(String, String, String)] = [
    ("duplicate key", "[inject-error]\nevent = \"l1_update\"\nerrno = \"5\"\nerrno = \"28\"\n", ":4: warning: 'errno' given again (first on line 3)"),
    ("state 0 in set-state", "[set-state]\nevent = \"l1_update\"\nstate = \"1\"\nnew_state = \"0\"\n", ":1: warning: new_state \"0\""),
    ("empty file", "", ": warning: no rules"),
    ("only comments", "# nothing here\n", ": warning: no rules"),
    ("NUL after a value", "[inject-error]\nevent = \"l1_update\"\0junk\n", ": warning: this looks like a binary file"),
]

@Suite struct BadRuleFileTests {
    @Test(arguments: rejected) func rejectedWithFileLineAndQEMUsMessage(_ c: BadRuleCase) throws {
        let path = try file(c.text)
        defer { unlink(path) }
        do {
            _ = try RuleFile.load(path: path)
            Issue.record("accepted \(c.name)")
        } catch {
            #expect(error.line == c.line)
            #expect(error.message == c.message)
            #expect(error.description.hasPrefix("\(path):\(c.line): \(c.message)"))
        }
    }

    @Test(arguments: acceptedWithWarning) func acceptedLikeQEMUWithAWarning(_ c: (String, String, String)) throws {
        let (rules, warnings) = try RuleFile.parseWithWarnings(Array(c.1.utf8), fileName: "w.cfg")
        _ = rules
        #expect(warnings.contains { $0.description.hasPrefix("w.cfg" + c.2) }, "\(c.0): \(warnings)")
    }

    @Test func duplicateKeyKeepsTheLastValueAsQEMUDoes() throws {
        let rules = try RuleFile.parse(Array("[inject-error]\nevent = \"l1_update\"\nerrno = \"5\"\nerrno = \"28\"\n".utf8), fileName: "d")
        #expect(rules.injectRules.map(\.errno) == [28])
    }

    /// QEMU accepts a sector past the end (blkdebug does not know the file's size when it
    /// parses); the rule never fires on a smaller file. `blkfault validate -i IMG` warns.
    @Test func sectorPastTheEndIsAccepted() throws {
        let rules = try RuleFile.parse(Array("[inject-error]\nevent = \"l1_update\"\nsector = \"999999999999\"\n".utf8), fileName: "s")
        let expected: Int64 = 999_999_999_999 * 512
        #expect(rules.injectRules.map(\.sectorOffset) == [expected])
    }

    /// QEMU reads any size (0.2 s for 100 MB of comments); so do we, without keeping
    /// the lines. The bound is loose: a debug build on a shared machine.
    @Test func hundredMegabytesOfCommentsAreRead() throws {
        var text = Array("[inject-error]\nevent = \"l1_update\"\nerrno = \"5\"\n".utf8)
        let comment = Array("# a comment line, as many as fill 100 MB .............................\n".utf8)
        text.reserveCapacity(100 << 20 + comment.count)
        while text.count < 100 << 20 { text += comment }
        let path = try file(text)
        defer { unlink(path) }
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let rules = try RuleFile.load(path: path)
        clock_gettime(CLOCK_MONOTONIC, &end)
        #expect(rules.injectRules.count == 1)
        let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
        #expect(seconds < 60, "took \(seconds) s")
    }

    /// A 100 MB line: QEMU reads it in 1023-byte pieces and rejects the first piece that
    /// is not a key (checked: "Invalid parameter '555...'", 63 characters).
    @Test func hundredMegabyteLineIsRejectedAtItsLine() throws {
        let text = Array("[inject-error]\nevent = \"l1_update\"\nerrno = \"".utf8)
            + [UInt8](repeating: UInt8(ascii: "5"), count: 100 << 20) + [0x22, 0x0a]
        let path = try file(text)
        defer { unlink(path) }
        do {
            _ = try RuleFile.load(path: path)
            Issue.record("accepted")
        } catch {
            #expect(error.line == 3)
            #expect(error.message == "Invalid parameter '" + String(repeating: "5", count: 63) + "'")
        }
    }
}
