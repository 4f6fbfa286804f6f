/// The rule file for one sweep case: the fault is armed at exactly the Nth raise of the event.
///
/// Plain blkdebug syntax for errno faults, so the repro also runs under real blkdebug.
/// blkdebug has no occurrence counter, so a chain of set-state rules counts: each raise moves
/// state k to k+1, and blkdebug checks a rule's state against the state before the event, so
/// the Nth raise sees state N. The chain goes one past N so that later raises (which would
/// re-arm a once="on" rule) find the rule's state gone.
enum SweepRules {
    static func text(for c: SweepCase) -> String {
        let p = c.point
        var s = "# blkfault sweep case \(c.id): \(c.kind.label) at raise \(p.occurrence) of \(p.event)"
        s += p.inferred ? " (an event blkfault infers: see `blkfault events`)\n" : "\n"
        s += "# set-state rules count the raises of \(p.event): state k during raise k\n"
        for k in 1...p.occurrence {
            s += "[set-state]\nevent = \"\(p.event)\"\nstate = \"\(k)\"\nnew_state = \"\(k + 1)\"\n\n"
        }
        switch c.kind {
        case .error(let errno, let once):
            s += "[inject-error]\nevent = \"\(p.event)\"\nerrno = \"\(errno)\"\nonce = \"\(once ? "on" : "off")\"\n"
        case .crash:
            s += "[crash]\nevent = \"\(p.event)\"\nwhen = \"before\"\nlose-unsynced = \"on\"\n"
        }
        s += "state = \"\(p.occurrence)\"\n"
        return s
    }

    /// Whether real blkdebug accepts the file (the repro says so).
    static func isPlainBlkdebug(_ c: SweepCase) -> Bool {
        if case .crash = c.kind { return false }
        return true
    }
}
