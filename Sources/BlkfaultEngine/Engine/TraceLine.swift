/// One JSON Lines record of the trace (BLKFAULT_TRACE): what happened to one operation.
public struct TraceLine {
    public var pid: Int32
    public var tid: Int32
    public var image: String
    public var model: String
    public var op: Operation
    public var step: Step
    /// The backing file the operation went to, when it is the overlay `image`'s backing I/O.
    public var backing: String?

    public init(pid: Int32, tid: Int32, image: String, model: String, op: Operation, step: Step) {
        self.pid = pid; self.tid = tid; self.image = image; self.model = model; self.op = op; self.step = step
    }

    public var json: String {
        var s = "{\"pid\":\(pid),\"tid\":\(tid),\"image\":" + Self.quote(image)
        if let backing { s += ",\"backing\":" + Self.quote(backing) }
        s += ",\"model\":\"\(model)\",\"op\":\"\(op.kind.name)\",\"offset\":\(op.offset),\"length\":\(op.length)"
        s += ",\"events\":" + Self.list(step.events.map(\.name))
        let guesses = step.events.filter { $0.info.recognition == .inferred }.map(\.name)
        if !guesses.isEmpty { s += ",\"inferred\":" + Self.list(guesses) }
        if !step.held.isEmpty { s += ",\"held_for_next_request\":" + Self.list(step.held.map(\.name)) }
        if !step.eventsAfter.isEmpty { s += ",\"events_after\":" + Self.list(step.eventsAfter.map(\.name)) }
        s += ",\"state_before\":\(step.stateBefore),\"state_after\":\(step.stateAfter)"
        switch step.decision {
        case .perform: s += ",\"action\":\"pass\""
        case .fail(let e): s += ",\"action\":\"fail\",\"errno\":\(e)"
        case .pretendSuccess: s += ",\"action\":\"pretend-success\""
        case .crash(let lose): s += ",\"action\":\"crash\",\"when\":\"before\",\"lose_unsynced\":\(lose)"
        case .torn(let keep, let then, let lose):
            s += ",\"action\":\"torn-write\",\"kept\":\(keep)"
            switch then {
            case .crash: s += ",\"then\":\"crash\",\"lose_unsynced\":\(lose)"
            case .fail(let e): s += ",\"then\":\"fail\",\"errno\":\(e)"
            }
        }
        if step.absorbed { s += ",\"absorbed\":\"close flush QEMU retries: performed, rule consumed\"" }
        if let line = step.ruleLine { s += ",\"rule_line\":\(line)" }
        if let choice = step.ruleChoice { s += Self.choice(choice) }
        if step.effects.delayNs > 0 { s += ",\"delay_ns\":\(step.effects.delayNs)" }
        if !step.effects.lostL2Entries.isEmpty {
            s += ",\"lost_l2_entries\":[" + step.effects.lostL2Entries.map {
                "{\"guest_offset\":\($0.guestOffset),\"on_disk\":\"0x\(String($0.onDisk, radix: 16))\",\"written\":\"0x\(String($0.written, radix: 16))\"}"
            }.joined(separator: ",") + "]"
        }
        if !step.effects.taken.isEmpty {
            s += ",\"actions\":[" + step.effects.taken.map(Self.taken).joined(separator: ",") + "]"
        }
        return s + "}\n"
    }

    static func choice(_ c: Choice) -> String {
        ",\"occurrence\":\(c.occurrence)" + (c.seed.map { ",\"seed\":\($0)" } ?? "")
    }

    /// One action rule that acted: what it did, its line, and the raise (and seed) that chose it.
    static func taken(_ t: TakenAction) -> String {
        var s = "{\"action\":\"\(t.action.name)\",\"rule_line\":\(t.line)" + choice(t.choice)
        switch t.action {
        case .crash(let after, let lose): s += ",\"when\":\"\(after ? "after" : "before")\",\"lose_unsynced\":\(lose)"
        case .tornWrite(let keep, _, _): s += ",\"keep\":\(keep)"
        case .corrupt:
            if let p = t.patch {
                s += ",\"buffer_offset\":\(p.offset),\"" + (p.xor ? "xor" : "set") + "\":\"0x"
                    + p.bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() + "\""
            }
        case .breakpoint(let tag): s += ",\"tag\":" + quote(tag)
        }
        return s + "}"
    }

    static func list(_ names: [String]) -> String { "[" + names.map { "\"\($0)\"" }.joined(separator: ",") + "]" }

    public static func quote(_ text: String) -> String {
        var out = "\""
        for u in text.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default:
                if u.value < 0x20 { out += "\\u00" + (u.value < 16 ? "0" : "") + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
