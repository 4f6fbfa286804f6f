/// One JSON Lines record of the trace (BLKFAULT_TRACE): what happened to one operation.
public struct TraceLine {
    public var pid: Int32
    public var tid: Int32
    public var image: String
    public var model: String
    public var op: Operation
    public var step: Step

    public init(pid: Int32, tid: Int32, image: String, model: String, op: Operation, step: Step) {
        self.pid = pid; self.tid = tid; self.image = image; self.model = model; self.op = op; self.step = step
    }

    public var json: String {
        var s = "{\"pid\":\(pid),\"tid\":\(tid),\"image\":" + Self.quote(image)
        s += ",\"model\":\"\(model)\",\"op\":\"\(op.kind.name)\",\"offset\":\(op.offset),\"length\":\(op.length)"
        s += ",\"events\":" + Self.list(step.events.map(\.name))
        let guesses = step.events.filter { $0.info.recognition == .inferred }.map(\.name)
        if !guesses.isEmpty { s += ",\"inferred\":" + Self.list(guesses) }
        if !step.eventsAfter.isEmpty { s += ",\"events_after\":" + Self.list(step.eventsAfter.map(\.name)) }
        s += ",\"state_before\":\(step.stateBefore),\"state_after\":\(step.stateAfter)"
        switch step.decision {
        case .perform: s += ",\"action\":\"pass\""
        case .fail(let e): s += ",\"action\":\"fail\",\"errno\":\(e)"
        case .pretendSuccess: s += ",\"action\":\"pretend-success\""
        }
        if let line = step.ruleLine { s += ",\"rule_line\":\(line)" }
        return s + "}\n"
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
