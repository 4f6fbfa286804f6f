import ArgumentParser
import BlkfaultEngine
import Foundation

/// `blkfault validate RULES...`: parse rule files the way libblkfault.so will, and summarise them.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check blkdebug rule files and summarise their rules.",
        discussion: """
            Exit status 1 if any file has a problem (printed as FILE:LINE: message). What QEMU \
            accepts but is probably a mistake (a repeated key, an empty file, new_state 0, binary \
            content, with --image a sector past the end of the image file) is printed as \
            FILE:LINE: warning: message, exit status 0: the library accepts such files, as QEMU does.
            """
    )

    @Argument(help: ArgumentHelp("Rule files.", valueName: "RULES"))
    var files: [String] = []

    @Flag(help: "Print every section and key, and whether real blkdebug accepts it (markdown), and exit.")
    var syntax = false

    @Option(name: [.customShort("i"), .long], help: ArgumentHelp(
        "An image the rules are meant for: warns about sectors past the end of its file.", valueName: "IMAGE"))
    var image: String?

    func validate() throws {
        if files.isEmpty && !syntax { throw ValidationError("give at least one rule file") }
    }

    func run() throws {
        if syntax {
            print(RuleFile.syntaxTable, terminator: "")
            return
        }
        var failed = false
        for (n, file) in files.enumerated() {
            if n > 0 { say() }
            do throws(BlkfaultError) {
                let (rules, warnings) = try RuleCheck.loadWithWarnings(file)
                for w in warnings { printError("blkfault: \(w)") }
                if let image { for w in RuleCheck.sectorWarnings(file: file, rules: rules, image: image) { printError("blkfault: \(w)") } }
                for line in RuleCheck.summary(file: file, rules: rules) { say(line) }
            } catch {
                printError(error.description)
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

enum RuleCheck {
    /// Loads a rule file with the engine's own parser; problems become `blkfault: FILE:LINE: message`.
    @discardableResult
    static func load(_ path: String) throws(BlkfaultError) -> RuleSet {
        do {
            return try RuleFile.load(path: path)
        } catch {
            throw .rules(error.description)
        }
    }

    static func loadWithWarnings(_ path: String) throws(BlkfaultError) -> (RuleSet, [RuleFileWarning]) {
        do {
            return try RuleFile.loadWithWarnings(path: path)
        } catch {
            throw .rules(error.description)
        }
    }

    /// blkdebug's `sector` is a byte offset into the image file (it sits below the qcow2
    /// driver): a rule past the file's end fires only once the file grows that far.
    static func sectorWarnings(file: String, rules: RuleSet, image: String) -> [RuleFileWarning] {
        guard let size = (try? FileManager.default.attributesOfItem(atPath: image)[.size]) as? NSNumber else {
            return [RuleFileWarning(fileName: file, line: 0, message: "cannot read the size of '\(image)'")]
        }
        return rules.injectRules.filter { $0.sectorOffset >= size.int64Value }.map { rule in
            RuleFileWarning(fileName: file, line: rule.line, message: "sector \(rule.sectorOffset / 512) (byte \(rule.sectorOffset)) "
                + "is past the end of \(image) (\(size.int64Value) bytes): the rule fires only if the file grows that far")
        }
    }

    static func errnoText(_ e: Int32) -> String {
        if e == 0 { return "0 (the request goes through)" }
        if e < 0 { return "\(e) (the request is dropped and reported successful)" }
        return "\(e) (\(String(cString: strerror(e))))"
    }

    static func iotypeText(_ mask: IOTypeMask) -> String {
        if mask == .blkdebugDefault { return "any but block-status (default)" }
        return IOType.allCases.filter { mask.contains($0) }.map(\.name).joined(separator: ",")
    }

    static func triggerText(_ t: Trigger?) -> String {
        guard let t else { return "" }
        var s = ""
        if let n = t.occurrence { s += " occurrence=\(n)" }
        if let p = t.probability { s += " probability=\(p) seed=\(t.seed.map(String.init) ?? "BLKFAULT_SEED or random")" }
        return s
    }

    static func actionText(_ a: Action) -> String {
        switch a {
        case .crash(let after, let lose): "-> SIGKILL \(after ? "after" : "before") the request\(lose ? ", losing unsynced writes" : "")"
        case .tornWrite(let keep, let then, let lose):
            switch then {
            case .crash: "-> keep \(keep) bytes, then SIGKILL\(lose ? ", losing earlier unsynced writes" : "")"
            case .fail(let e): "-> keep \(keep) bytes, then fail with \(errnoText(e))"
            }
        case .corrupt(.byte(let offset, let mask)): "-> read buffer byte \(offset) ^= 0x\(String(mask, radix: 16))"
        case .corrupt(.entry(let index, let value)): "-> read buffer entry \(index) = 0x\(String(value, radix: 16))"
        case .corrupt(.field(let field, let value)): "-> header field \(field.name) reads as 0x\(String(value, radix: 16))"
        case .breakpoint(let tag): "-> stop until `blkfault resume \(tag)`"
        }
    }

    static func summary(file: String, rules: RuleSet) -> [String] {
        let n = rules.injectRules.count + rules.setStateRules.count + rules.actionRules.count
        var counts = "\(rules.injectRules.count) inject-error, \(rules.setStateRules.count) set-state"
        if !rules.actionRules.isEmpty { counts += ", \(rules.actionRules.count) blkfault action\(rules.actionRules.count == 1 ? "" : "s")" }
        var lines = ["\(file): \(n) rule\(n == 1 ? "" : "s") (\(counts))"]
        var rows: [(line: Int, text: String, event: BlkdebugEvent)] = []
        for r in rules.injectRules {
            var t = "[inject-error]\(r.id.map { " \"\($0)\"" } ?? "")  event=\(r.event.name)"
            t += " state=\(r.state == 0 ? "any" : String(r.state))"
            t += " errno=\(errnoText(r.errno))"
            t += " sector=\(r.sectorOffset < 0 ? "any" : "\(r.sectorOffset / 512) (byte \(r.sectorOffset))")"
            t += " once=\(r.once ? "on" : "off")"
            if r.immediately { t += " immediately=on" }
            t += " iotype=\(iotypeText(r.iotypeMask))"
            t += triggerText(r.trigger)
            if r.delayNs > 0 { t += " delay-ns=\(r.delayNs)" }
            rows.append((r.line, t, r.event))
        }
        for r in rules.actionRules {
            var t = "[\(r.action.name)]\(r.id.map { " \"\($0)\"" } ?? "")  event=\(r.event?.name ?? "(reads of the header)")"
            t += " state=\(r.state == 0 ? "any" : String(r.state))"
            t += " sector=\(r.sectorOffset < 0 ? "any" : "\(r.sectorOffset / 512) (byte \(r.sectorOffset))")"
            t += " once=\(r.once ? "on" : "off")" + triggerText(r.trigger) + " " + actionText(r.action)
            rows.append((r.line, t, r.event ?? .none))
        }
        for r in rules.setStateRules {
            let t = "[set-state]\(r.id.map { " \"\($0)\"" } ?? "")  event=\(r.event.name)"
                + " state=\(r.state == 0 ? "any" : String(r.state)) new_state=\(r.newState)"
            rows.append((r.line, t, r.event))
        }
        rows.sort { $0.line < $1.line }
        for row in rows {
            lines.append("  line \(row.line): \(row.text)")
            switch row.event.info.recognition {
            case .notYet, .neverRaised:
                lines.append("    note: blkfault never raises \(row.event.name) (\(row.event.info.recognition.rawValue): \(row.event.info.howRecognised)); this rule never fires")
            case .inferred:
                lines.append("    note: \(row.event.name) is inferred from QEMU 7.2's behaviour (\(row.event.info.howRecognised))")
            case .exact:
                break
            }
        }
        return lines
    }
}
