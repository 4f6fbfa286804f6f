import Testing
import BlkfaultEngine

/// The engine's decisions for blkfault's action sections, on the reference traces of
/// Qcow2ClassifierTests (1 KiB clusters; refblock @2048, L1 @3072, new L2 @68608).
@Suite struct ActionEngineTests {
    /// S1's first allocation up to the L1 update; returns the steps of each I/O.
    static func s1(_ rules: String) throws -> [String: Step] {
        var r = try Replay(freshQcow2(), rules: rules)
        r.open()
        var steps: [String: Step] = [:]
        steps["refblock read"] = r.read(2048, 1024)
        steps["refblock write"] = r.write(2048, r.refblock(2048, settingClusters: [67]))
        steps["flush 1"] = r.flush()
        steps["l2 write"] = r.write(68608, [UInt8](repeating: 0, count: 1024))
        steps["flush 2"] = r.flush()
        steps["l1 write"] = r.write(3072, be64((1 << 63) | 68608))
        return steps
    }

    @Test func crashBeforeTheRequestOfItsEvent() throws {
        let steps = try Self.s1("[crash]\nevent = \"l1_update\"\nlose-unsynced = \"on\"\n")
        #expect(steps["l1 write"]?.decision == .crash(loseUnsynced: true))
        #expect(steps.filter { $0.value.decision != .perform }.count == 1)
        let taken = try #require(steps["l1 write"]?.effects.taken.first)
        #expect(taken.line == 1 && taken.choice == Choice(occurrence: 1, seed: nil))
    }

    @Test func crashAfterPerformsFirst() throws {
        let steps = try Self.s1("[crash]\nevent = \"l2_update\"\nwhen = \"after\"\n")
        #expect(steps["l2 write"]?.decision == .perform && steps["l2 write"]?.effects.crashAfter == false)
    }

    @Test func tornWriteKeepsAPrefix() throws {
        let steps = try Self.s1("[torn-write]\nevent = \"l2_update\"\nkeep-sectors = \"1\"\nthen = \"28\"\n")
        #expect(steps["l2 write"]?.decision == .torn(keep: 512, then: .fail(errno: 28), loseUnsynced: false))
        // keep beyond the write is clamped to it.
        let all = try Self.s1("[torn-write]\nevent = \"l1_update\"\nkeep = \"4096\"\n")
        #expect(all["l1 write"]?.decision == .torn(keep: 8, then: .crash, loseUnsynced: false))
    }

    @Test func sectorAndIotypeAimActionsAsInjectError() throws {
        // The L2 write does not cover sector 0; the L1 write is not a read.
        let steps = try Self.s1("[crash]\nevent = \"l2_update\"\nsector = \"0\"\n[crash]\nevent = \"l1_update\"\niotype = \"read\"\n")
        #expect(steps.allSatisfy { $0.value.decision == .perform })
    }

    @Test func breakStopsOnlyTheRequestOfItsEvent() throws {
        let steps = try Self.s1("[break]\nevent = \"l2_update\"\ntag = \"x\"\n")
        #expect(steps.filter { $0.value.effects.breakTag != nil }.map(\.key) == ["l2 write"])
        #expect(steps["l2 write"]?.effects.breakTag == "x")
    }

    @Test func eventsAfterARequestArmTheNext() throws {
        // pwritev_done is raised after the refblock write: the next request (the flush) crashes.
        let steps = try Self.s1("[crash]\nevent = \"pwritev_done\"\noccurrence = \"1\"\n")
        #expect(steps["flush 1"]?.decision == .crash(loseUnsynced: false))
        #expect(steps["refblock write"]?.decision == .perform)
    }

    @Test func corruptAltersOnlyReadsOfItsEvent() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(67...195)))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 128, cluster: 1024))
        var r = try Replay(setup.file, rules: "[corrupt]\nevent = \"l2_load\"\nentry = \"1\"\nset = \"0x8000000000011200\"\nonce = \"on\"\n")
        r.open()
        let load = r.read(68608, 1024)
        #expect(load.events == [.l2Load])
        #expect(load.effects.patches == [BufferPatch(offset: 8, bytes: be64(0x8000_0000_0001_1200), xor: false)])
        // `once` consumed the rule.
        #expect(r.read(68608, 1024).effects.patches.isEmpty)
    }

    @Test func tornL2WritePredictsTheLostEntries() throws {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: Array(67...196)))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: l2Slice(size: 1024, host: 69632, count: 64, cluster: 1024))
        var r = try Replay(setup.file, rules: "[torn-write]\nevent = \"l2_update\"\nkeep-sectors = \"1\"\n")
        r.open()
        r.read(68608, 1024)
        // Entries 10 (in the kept sector) and 100 (past it) change; only 100 is lost.
        var table = l2Slice(size: 1024, host: 69632, count: 64, cluster: 1024)
        table.replaceSubrange(80..<88, with: be64((1 << 63) | 200704))
        table.replaceSubrange(800..<808, with: be64((1 << 63) | 201728))
        let step = r.write(68608, table)
        #expect(step.decision == .torn(keep: 512, then: .crash, loseUnsynced: false))
        #expect(step.effects.lostL2Entries == [LostL2Entry(guestOffset: 100 * 1024, onDisk: 0, written: (1 << 63) | 201728)])
    }

    @Test func plainRulesTakeNoAction() throws {
        let steps = try Self.s1("[inject-error]\nevent = \"l1_update\"\nerrno = \"5\"\n")
        #expect(steps["l1 write"]?.decision == .fail(errno: 5))
        #expect(steps.allSatisfy { $0.value.effects.taken.isEmpty && $0.value.effects.delayNs == 0 })
    }
}
