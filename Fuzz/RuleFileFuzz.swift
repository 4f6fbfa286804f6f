// libFuzzer entry point: the rule-file parser on arbitrary bytes.
// Built by scripts/fuzz together with Sources/BlkfaultEngine (one module, no SwiftPM).

@_cdecl("LLVMFuzzerTestOneInput")
public func ruleFileFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    do {
        let rules = try RuleFile.parse(bytes, fileName: "fuzz.cfg")
        // Every accepted file must also drive the rule machine without trapping.
        var machine = BlkdebugRules(rules)
        for event in BlkdebugEvent.allCases { _ = machine.raise(event) }
        _ = machine.check(offset: 0, bytes: 4096, iotype: .write)
        _ = machine.check(offset: Int64.max - 4096, bytes: 4096, iotype: .read)
    } catch {
        // A rejection must name a line inside the file (0 = the file as a whole).
        let lines = 1 + bytes.lazy.filter { $0 == 10 }.count
        precondition(error.line >= 0 && error.line <= lines, "error line \(error.line) outside 0...\(lines)")
        _ = error.description
    }
    return 0
}
