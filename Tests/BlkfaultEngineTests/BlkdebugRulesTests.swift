import Testing
@testable import BlkfaultEngine

// The semantics are QEMU 7.2's block/blkdebug.c as described in the notes (§2), whose
// experiments were run against the installed qemu-io: once on/off, rule order, set-state
// timing, sector filter, iotype=flush, errno 0 shadowing, active-list replacement vs. retention.

private func rules(_ text: String) throws -> BlkdebugRules {
    BlkdebugRules(try RuleFile.parse(Array(text.utf8), fileName: "t.cfg"))
}

extension BlkdebugRules {
    fileprivate mutating func write(at offset: Int64 = 65536, bytes: Int64 = 4096) -> Int32? {
        check(offset: offset, bytes: bytes, iotype: .write)?.errno
    }
}

@Suite struct BlkdebugRulesTests {
    @Test func startsInStateOneWithNothingActive() throws {
        var node = try rules("[inject-error]\nevent = \"l1_update\"\n")
        #expect(node.state == 1)
        #expect(!node.hasActiveRules)
        #expect(node.write() == nil)
        #expect(node.hasRules(for: .l1Update))
        #expect(!node.hasRules(for: .l2Load))
    }

    @Test func onceOffFailsEveryLaterRequest() throws {
        var node = try rules("[inject-error]\nevent = \"l1_update\"\nerrno = \"28\"\n")
        _ = node.raise(.l1Update)
        for _ in 0..<3 { #expect(node.write() == 28) }
        #expect(node.check(offset: 0, bytes: 512, iotype: .read)?.errno == 28)
        #expect(node.check(offset: 0, bytes: 0, iotype: .flush)?.errno == 28)
        #expect(node.check(offset: 0, bytes: 512, iotype: .discard)?.errno == 28)
        #expect(node.check(offset: 0, bytes: 512, iotype: .writeZeroes)?.errno == 28)
        // The default mask leaves block-status alone.
        #expect(node.check(offset: 0, bytes: 512, iotype: .blockStatus) == nil)
        // Other events, and time, do not retire it.
        _ = node.raise(.l2Load)
        #expect(node.write() == 28)
    }

    @Test func onceFailsOneRequestThenIsGoneForGood() throws {
        var node = try rules("[inject-error]\nevent = \"l1_update\"\nonce = \"on\"\n")
        _ = node.raise(.l1Update)
        let decision = node.check(offset: 0, bytes: 8, iotype: .write)
        #expect(decision == InjectDecision(errno: 5, line: 1, ruleIndex: 0, consumed: true, immediately: false,
                                           choice: Choice(occurrence: 1, seed: nil)))
        #expect(node.write() == nil)
        #expect(!node.hasActiveRules)
        // Deleted from its event too: raising it again activates nothing.
        #expect(!node.hasRules(for: .l1Update))
        #expect(!node.raise(.l1Update).activeListReplaced)
        #expect(node.write() == nil)
    }

    @Test func onceIsConsumedOnlyByARequestItFails() throws {
        var node = try rules("[inject-error]\nevent = \"none\"\nonce = \"on\"\nsector = \"136\"\niotype = \"write\"\n")
        _ = node.raise(.none)
        #expect(node.check(offset: 69632, bytes: 512, iotype: .read) == nil)   // wrong iotype
        #expect(node.check(offset: 0, bytes: 512, iotype: .write) == nil)      // misses the sector
        #expect(node.check(offset: 69632, bytes: 512, iotype: .write)?.errno == 5)
        #expect(node.check(offset: 69632, bytes: 512, iotype: .write) == nil)
    }

    @Test func onceRuleReplacedBeforeUseCanBeActivatedAgain() throws {
        var node = try rules("""
            [inject-error]
            event = "l1_update"
            once = "on"
            [inject-error]
            event = "l2_load"
            errno = "0"

            """)
        _ = node.raise(.l1Update)
        _ = node.raise(.l2Load)          // replaces the active list: the once rule was never used
        #expect(node.write() == nil)
        _ = node.raise(.l1Update)
        #expect(node.write() == 5)
    }

    @Test func firstDefinedMatchingSetStateWins() throws {
        var node = try rules("""
            [set-state]
            event = "l1_update"
            new_state = "2"
            [set-state]
            event = "l1_update"
            new_state = "3"

            """)
        let outcome = node.raise(.l1Update)
        #expect(node.state == 2)
        #expect(outcome.stateBefore == 1)
        #expect(outcome.stateAfter == 2)
        #expect(outcome.setStateRuleLine == 1)
    }

    @Test func setStateRulesSeeThePreEventState() throws {
        // 1 → 2 and 2 → 3 on the same event: one occurrence moves one step only.
        var node = try rules("""
            [set-state]
            event = "l1_update"
            state = "2"
            new_state = "3"
            [set-state]
            event = "l1_update"
            state = "1"
            new_state = "2"

            """)
        #expect(node.raise(.l1Update).setStateRuleLine == 5)
        #expect(node.state == 2)
        #expect(node.raise(.l1Update).setStateRuleLine == 1)
        #expect(node.state == 3)
        let outcome = node.raise(.l1Update)
        #expect(outcome.setStateRuleLine == nil)
        #expect(outcome.stateAfter == 3)
    }

    @Test func matchingInjectRulesActivateInDefinitionOrder() throws {
        var node = try rules("""
            [inject-error]
            event = "l1_update"
            errno = "28"
            [inject-error]
            event = "l2_load"
            errno = "1"
            [inject-error]
            event = "l1_update"
            errno = "5"

            """)
        let outcome = node.raise(.l1Update)
        #expect(outcome.activeListReplaced)
        #expect(outcome.activated.lines == [1, 7])
        #expect(node.activeRules.map(\.errno) == [28, 5])
        #expect(node.write() == 28)
    }

    @Test func activeListIsReplacedOnlyByAnEventWithAStateMatchingInjectRule() throws {
        var node = try rules("""
            [inject-error]
            event = "l1_update"
            errno = "28"
            [inject-error]
            event = "l2_load"
            state = "2"
            errno = "1"
            [set-state]
            event = "write_aio"
            new_state = "7"
            [inject-error]
            event = "cluster_alloc"
            errno = "0"

            """)
        _ = node.raise(.l1Update)
        #expect(node.write() == 28)
        // No inject rules: retained.
        #expect(!node.raise(.pwritev).activeListReplaced)
        #expect(node.write() == 28)
        // Only a state-mismatched inject rule: retained.
        #expect(!node.raise(.l2Load).activeListReplaced)
        #expect(node.write() == 28)
        // A set-state rule alone: retained, and the active rule keeps injecting in the new state.
        #expect(!node.raise(.writeAio).activeListReplaced)
        #expect(node.state == 7)
        #expect(node.write() == 28)
        // A matching inject rule: replaced (here by one that lets everything through).
        let outcome = node.raise(.clusterAlloc)
        #expect(outcome.activeListReplaced)
        #expect(outcome.activated.lines == [11])
        #expect(node.write() == nil)
        #expect(node.hasActiveRules)
    }

    @Test func injectKeyedToTheNewStateWaitsForTheNextOccurrence() throws {
        // Test 066's pattern: set-state and inject on the same event.
        var node = try rules("""
            [set-state]
            event = "l1_update"
            state = "1"
            new_state = "2"
            [inject-error]
            event = "l1_update"
            state = "2"

            """)
        let first = node.raise(.l1Update)
        #expect(first.stateAfter == 2)
        #expect(!first.activeListReplaced)
        #expect(node.write() == nil)
        let second = node.raise(.l1Update)
        #expect(second.activated.lines == [5])
        #expect(node.write() == 5)
    }

    @Test func sectorFilter() throws {
        var node = try rules("[inject-error]\nevent = \"none\"\nsector = \"136\"\n")   // byte 69632
        _ = node.raise(.none)
        #expect(node.write(at: 69632, bytes: 512) == 5)
        #expect(node.write(at: 65536, bytes: 4096) == nil)    // ends right before it
        #expect(node.write(at: 65536, bytes: 4097) == 5)
        #expect(node.write(at: 69633, bytes: 4096) == nil)    // starts after it
        #expect(node.write(at: 0, bytes: 1 << 30) == 5)
        // Flushes are checked as (0, 0): a rule with a sector never fails them.
        #expect(node.check(offset: 0, bytes: 0, iotype: .flush) == nil)
        #expect(node.write(at: 69632, bytes: 0) == nil)
    }

    @Test func negativeSectorsCompareUnsigned() throws {
        var node = try rules("[inject-error]\nevent = \"none\"\nsector = \"-2\"\n")    // offset -1024
        _ = node.raise(.none)
        #expect(node.write(at: 0, bytes: 1 << 40) == nil)
        #expect(node.write(at: -4096, bytes: 4095) == 5)
        // offset + bytes wraps to 0 here, as it does in C.
        #expect(node.write(at: -4096, bytes: 4096) == nil)
    }

    @Test func iotypeFilter() throws {
        var node = try rules("""
            [inject-error]
            event = "none"
            iotype = "flush"
            errno = "28"
            [inject-error]
            event = "none"
            iotype = "block-status"
            errno = "1"

            """)
        _ = node.raise(.none)
        #expect(node.write() == nil)
        #expect(node.check(offset: 0, bytes: 512, iotype: .read) == nil)
        #expect(node.check(offset: 0, bytes: 0, iotype: .flush)?.errno == 28)
        #expect(node.check(offset: 0, bytes: 512, iotype: .blockStatus)?.errno == 1)
    }

    @Test func errnoZeroShadowsLaterRulesAndIsNeverConsumed() throws {
        var node = try rules("""
            [inject-error]
            event = "none"
            errno = "0"
            once = "on"
            iotype = "write"
            [inject-error]
            event = "none"
            errno = "28"
            once = "on"

            """)
        _ = node.raise(.none)
        for _ in 0..<3 { #expect(node.write() == nil) }
        #expect(node.activeRules.count == 2)
        // Reads are not covered by the errno-0 rule, so the rule behind it decides.
        #expect(node.check(offset: 0, bytes: 512, iotype: .read)?.errno == 28)
        #expect(node.activeRules.map(\.line) == [1])
    }

    @Test func negativeErrnoIsReturnedAsIs() throws {
        var node = try rules("[inject-error]\nevent = \"pwritev\"\nerrno = \"-5\"\n")
        _ = node.raise(.pwritev)
        #expect(node.write() == -5)
    }

    @Test func stateZeroMatchesAnyState() throws {
        var node = try rules("""
            [set-state]
            event = "l1_update"
            new_state = "5"
            [inject-error]
            event = "l2_load"

            """)
        _ = node.raise(.l1Update)
        #expect(node.state == 5)
        #expect(node.raise(.l2Load).activeListReplaced)
        #expect(node.write() == 5)
    }

    @Test func newStateZero() throws {
        // Once in state 0 only rules with state 0 (= any) match; state "-1" rules never
        // match from state 1 either.
        var node = try rules("""
            [set-state]
            event = "l1_update"
            new_state = "0"
            [set-state]
            event = "l2_load"
            state = "0"
            new_state = "2"
            [inject-error]
            event = "l2_update"
            state = "1"
            [inject-error]
            event = "l2_update"
            state = "-1"

            """)
        _ = node.raise(.l1Update)
        #expect(node.state == 0)
        #expect(!node.raise(.l2Update).activeListReplaced)
        // The state-0 set-state rule matches in state 0, as in any state.
        _ = node.raise(.l2Load)
        #expect(node.state == 2)
    }

    @Test func stateMinusOneNeverMatchesFromTheStart() throws {
        var node = try rules("[inject-error]\nevent = \"l1_update\"\nstate = \"-1\"\n")
        #expect(!node.raise(.l1Update).activeListReplaced)
        #expect(node.write() == nil)
    }

    @Test func onceRemovalKeepsTheOthersInOrder() throws {
        var node = try rules("""
            [inject-error]
            event = "none"
            errno = "1"
            once = "on"
            iotype = "read"
            [inject-error]
            event = "none"
            errno = "2"
            once = "on"
            [inject-error]
            event = "none"
            errno = "3"

            """)
        _ = node.raise(.none)
        #expect(node.write() == 2)
        #expect(node.activeRules.map(\.errno) == [1, 3])
        #expect(node.check(offset: 0, bytes: 1, iotype: .read)?.errno == 1)
        #expect(node.write() == 3)
        #expect(node.check(offset: 0, bytes: 1, iotype: .read)?.errno == 3)
        #expect(node.hasRules(for: .none))
    }

    @Test func decisionCarriesRuleDetails() throws {
        var node = try rules("# x\n[inject-error]\nevent = \"none\"\nimmediately = \"on\"\nerrno = \"28\"\n")
        _ = node.raise(.none)
        #expect(node.check(offset: 0, bytes: 1, iotype: .write)
                == InjectDecision(errno: 28, line: 2, ruleIndex: 0, consumed: false, immediately: true,
                                  choice: Choice(occurrence: 1, seed: nil)))
    }

    @Test func hasRulesCountsSetStateRules() throws {
        let node = try rules("[set-state]\nevent = \"flush_to_os\"\nnew_state = \"2\"\n")
        #expect(node.hasRules(for: .flushToOS))
        #expect(!node.hasRules(for: .flushToDisk))
        #expect(BlkdebugRules(RuleSet()).hasRules(for: .none) == false)
    }
}
