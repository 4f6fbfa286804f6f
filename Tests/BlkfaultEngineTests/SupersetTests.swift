import Testing
import Glibc
@testable import BlkfaultEngine

// blkfault's rule-file superset: new keys and sections are recognised only as
// extensions; a plain blkdebug file parses exactly as before (RuleFileTests).

private func parse(_ text: String) throws(RuleFileError) -> RuleSet {
    try RuleFile.parse(Array(text.utf8), fileName: "t.cfg")
}

private func rejection(_ text: String) -> RuleFileError? {
    do { _ = try parse(text); return nil } catch { return error }
}

struct SupersetTests {
    @Test func plainBlkdebugFileHasNoExtensions() throws {
        let rules = try parse("[inject-error]\nevent = \"l2_load\"\nerrno = \"0\"\n[set-state]\nevent = \"l2_load\"\nnew_state = \"2\"\n")
        #expect(rules.actionRules.isEmpty)
        #expect(rules.injectRules[0].trigger == nil && rules.injectRules[0].delayNs == 0)
        #expect(!rules.losesUnsynced && !rules.usesProbability)
    }

    @Test func triggerAndDelayKeysInInjectError() throws {
        let rule = try parse("""
            [inject-error]
            event = "write_aio"
            occurrence = "3"
            probability = "0.25"
            seed = "0x2a"
            delay-ns = "1000"
            errno = "0"

            """).injectRules[0]
        #expect(rule.trigger == Trigger(occurrence: 3, probability: 0.25, seed: 42))
        #expect(rule.delayNs == 1000 && rule.errno == 0)
    }

    @Test func everyActionSection() throws {
        let rules = try parse("""
            [crash]
            event = "l2_update"
            when = "after"
            lose-unsynced = "on"
            [torn-write]
            event = "l2_update"
            keep-sectors = "2"
            then = "28"
            [torn-write]
            event = "refblock_update_part"
            keep = "100"
            [corrupt]
            event = "l2_load"
            entry = "3"
            set = "0x8000000000050200"
            sector = "512"
            [corrupt]
            event = "read_aio"
            byte = "7"
            xor = "0x80"
            once = "on"
            [corrupt]
            field = "incompatible_features"
            set = "2"
            [break "b"]
            event = "write_aio"
            tag = "w1"
            occurrence = "2"

            """)
        let actions = rules.actionRules.map(\.action)
        #expect(actions == [
            .crash(after: true, loseUnsynced: true),
            .tornWrite(keep: 1024, then: .fail(errno: 28), loseUnsynced: false),
            .tornWrite(keep: 100, then: .crash, loseUnsynced: false),
            .corrupt(.entry(index: 3, value: 0x8000_0000_0005_0200)),
            .corrupt(.byte(offset: 7, xor: 0x80)),
            .corrupt(.field(Qcow2HeaderField(name: "incompatible_features")!, value: 2)),
            .breakpoint(tag: "w1"),
        ])
        #expect(rules.actionRules.map(\.line) == [1, 5, 9, 12, 17, 22, 25])
        #expect(rules.actionRules[3].sectorOffset == 512 * 512 && rules.actionRules[4].once)
        #expect(rules.actionRules[5].event == nil && rules.actionRules[6].id == "b")
        #expect(rules.actionRules[6].trigger == Trigger(occurrence: 2))
        #expect(rules.losesUnsynced)
    }

    @Test(arguments: [
        ("[inject-error]\nevent = \"write_aio\"\nprobability = \"1.5\"\n", 3, "Parameter 'probability' expects a number from 0 to 1"),
        ("[inject-error]\nevent = \"write_aio\"\noccurrence = \"0\"\n", 3, "occurrence must be 1 or more"),
        ("[inject-error]\nevent = \"write_aio\"\noccurrence = \"x\"\n", 3, "Parameter 'occurrence' expects a number"),
        ("[inject-error]\nevent = \"write_aio\"\nseed = \"1\"\n", 3, "seed without probability"),
        ("[crash]\nevent = \"write_aio\"\nwhen = \"later\"\n", 3, "invalid parameter value: later"),
        ("[crash]\nevent = \"write_aio\"\nkeep = \"1\"\n", 3, "Invalid parameter 'keep'"),
        ("[crash]\nwhen = \"after\"\n", 1, "Missing event name for rule"),
        ("[torn-write]\nevent = \"l2_update\"\n", 1, "torn-write needs keep or keep-sectors"),
        ("[torn-write]\nevent = \"l2_update\"\nkeep = \"1\"\nkeep-sectors = \"1\"\n", 4, "give keep or keep-sectors, not both"),
        ("[torn-write]\nevent = \"l2_update\"\nkeep = \"1\"\nthen = \"boom\"\n", 4, "invalid parameter value: boom"),
        ("[torn-write]\nevent = \"l2_update\"\nkeep = \"1\"\nthen = \"5\"\nlose-unsynced = \"on\"\n", 5, "lose-unsynced needs then = \"crash\""),
        ("[corrupt]\nevent = \"read_aio\"\nentry = \"1\"\nset = \"1\"\n", 3, "entry needs a table event"),
        ("[corrupt]\nevent = \"l2_load\"\n", 1, "corrupt needs byte, entry or field"),
        ("[corrupt]\nevent = \"l2_load\"\nbyte = \"1\"\nentry = \"1\"\n", 1, "corrupt takes one of byte, entry, field"),
        ("[corrupt]\nevent = \"l2_load\"\nbyte = \"1\"\nxor = \"0x100\"\n", 4, "byte needs xor from 0x01 to 0xff"),
        ("[corrupt]\nevent = \"l2_load\"\nentry = \"1\"\n", 1, "entry needs set"),
        ("[corrupt]\nfield = \"incompatible_feature\"\nset = \"1\"\n", 2, "unknown header field 'incompatible_feature'"),
        ("[break]\nevent = \"write_aio\"\n", 1, "break needs a tag"),
        ("[break]\nevent = \"write_aio\"\ntag = \"a/b\"\n", 3, "tag must be printable ASCII without spaces or '/'"),
        ("[brake]\nevent = \"write_aio\"\n", 1, "There is no option group 'brake'"),
    ])
    func errorsSayFileAndLine(config: String, line: Int, message: String) {
        let error = rejection(config)
        #expect(error?.line == line && error?.message == message, "\(String(describing: error))")
        #expect(error?.description.hasPrefix("t.cfg:\(line): \(message)") == true)
    }

    @Test func hintsForTheNewKeys() {
        #expect(rejection("[corrupt]\nfield = \"incompatible_feature\"\nset = \"1\"\n")?.hint == "did you mean 'incompatible_features'?")
        #expect(rejection("[brake]\nevent = \"write_aio\"\n")?.hint == "did you mean 'break'?")
        #expect(rejection("[set-state]\nevent = \"l2_load\"\nlose-unsynced = \"on\"\n")?.hint == "'lose-unsynced' belongs in [crash], not in [set-state]")
    }

    // MARK: engine

    @Test func occurrenceChoosesTheNthRaiseOnly() throws {
        var rules = BlkdebugRules(try parse("[inject-error]\nevent = \"write_aio\"\noccurrence = \"2\"\n"))
        var fired: [UInt64] = []
        for n in 1...4 {
            _ = rules.raise(.writeAio)
            if let hit = rules.check(offset: 0, bytes: 512, iotype: .write) { fired.append(hit.choice!.occurrence); #expect(n == 2) }
            // Not the I/O that follows the chosen request.
            rules.endRequest()
            let next = rules.check(offset: 0, bytes: 512, iotype: .write)
            #expect(next == nil)
        }
        #expect(fired == [2] && rules.occurrences(of: .writeAio) == 4)
    }

    /// Which of `raises` raises a probability rule chose.
    private func draws(seed: UInt64, ruleSeed: String = "", raises: Int = 64) throws -> [Int] {
        var rules = BlkdebugRules(try parse("[inject-error]\nevent = \"write_aio\"\nprobability = \"0.5\"\n" + ruleSeed), seed: seed)
        var chosen: [Int] = []
        for n in 1...raises {
            _ = rules.raise(.writeAio)
            if let hit = rules.check(offset: 0, bytes: 1, iotype: .write) {
                chosen.append(n)
                #expect(hit.choice == Choice(occurrence: UInt64(n), seed: ruleSeed.contains("seed") ? 9 : seed))
            }
            rules.endRequest()
        }
        return chosen
    }

    @Test func probabilityIsDeterministicPerSeed() throws {
        let a = try draws(seed: 1), b = try draws(seed: 1), c = try draws(seed: 2)
        #expect(a == b && a != c)
        #expect(a.count > 16 && a.count < 48, "\(a.count) of 64 at p = 0.5")
        #expect(try draws(seed: 1, ruleSeed: "seed = \"9\"\n") == (try draws(seed: 5, ruleSeed: "seed = \"9\"\n")))
        #expect(try draws(seed: 3, ruleSeed: "probability = \"0\"\n").isEmpty)
        #expect(try draws(seed: 3, ruleSeed: "probability = \"1\"\n").count == 64)
    }

    @Test func delayWithErrnoZeroPerformsTheRequest() throws {
        var rules = BlkdebugRules(try parse("[inject-error]\nevent = \"write_aio\"\nerrno = \"0\"\ndelay-ns = \"5\"\n"))
        _ = rules.raise(.writeAio)
        let decision = rules.check(offset: 0, bytes: 1, iotype: .write)
        let hit = try #require(decision)
        #expect(hit.errno == 0 && hit.delayNs == 5)
        // Without delay-ns, errno 0 lets it through as blkdebug does.
        var plain = BlkdebugRules(try parse("[inject-error]\nevent = \"write_aio\"\nerrno = \"0\"\n"))
        _ = plain.raise(.writeAio)
        let through = plain.check(offset: 0, bytes: 1, iotype: .write)
        #expect(through == nil)
    }

    @Test func corruptPatchesLandInTheReadBuffer() throws {
        let op = Operation(.read, offset: 0x40000, length: 0x10000)
        #expect(ActionRules.patch(.entry(index: 2, value: 0x0102), event: .l2Load, op: op, header: nil)
                == BufferPatch(offset: 16, bytes: [0, 0, 0, 0, 0, 0, 1, 2], xor: false))
        #expect(ActionRules.patch(.byte(offset: 0x10000, xor: 1), event: .readAio, op: op, header: nil) == nil)
        let header = Operation(.read, offset: 0, length: 112)
        #expect(ActionRules.patch(.field(Qcow2HeaderField(name: "l1_size")!, value: 7), event: nil, op: header, header: nil)
                == BufferPatch(offset: 36, bytes: [0, 0, 0, 7], xor: false))
    }

    @Test func unsyncedWritesAreBounded() {
        var j = UnsyncedWrites(limit: 10)
        let first = j.admits(6)
        #expect(first)
        j.record(offset: 0, bytes: [1, 2, 3, 4, 5, 6], fileSize: 100)
        let second = j.admits(6)
        #expect(!second && j.overflowed && j.preImages.isEmpty)
        j.synced()
        let third = j.admits(10)
        #expect(!j.overflowed && third && j.isEmpty)
    }

    /// README documents the superset in one table, generated from the key table.
    @Test func readmeSyntaxTableIsCurrent() throws {
        let path = String(#filePath.dropLast("Tests/BlkfaultEngineTests/SupersetTests.swift".count)) + "README.md"
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        let readme = String(decoding: bytes, as: UTF8.self)
        let begin = "<!-- syntax:begin (generated from RuleFile.syntaxTable; a test checks it) -->\n"
        let start = try #require(readme.firstRange(of: begin)).upperBound
        let end = try #require(readme.firstRange(of: "<!-- syntax:end -->")).lowerBound
        #expect(String(readme[start..<end]) == RuleFile.syntaxTable)
    }
}
