import Foundation
import Testing

/// Every shipped rule file in rules/ does under blkfault what it does under
/// QEMU's blkdebug, on the workload its `# parity-test:` line names.
@Suite(.serialized) struct RuleFilesTests {
    static let rulesDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("rules")

    static var allFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: rulesDirectory.path)) ?? [])
            .filter { $0.hasSuffix(".cfg") }.sorted()
    }

    static func text(_ file: String) -> String {
        (try? String(contentsOf: rulesDirectory.appendingPathComponent(file), encoding: .utf8)) ?? ""
    }

    /// Plain blkdebug files (a `# parity-test:` line); the others use blkfault's superset
    /// and name their test in ActionsTests on a `# blkfault-test:` line.
    static var files: [String] { allFiles.filter { text($0).contains("# parity-test:") } }

    /// `# parity-test: cluster_size=N size=S: cmd; cmd`
    static func workload(_ text: String) -> (clusterSize: Int, size: String, commands: [String])? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("# parity-test:") }) else { return nil }
        let body = line.dropFirst("# parity-test:".count)
        let parts = body.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { return nil }
        var cluster = 65536, size = "64M"
        for field in parts[0].split(separator: " ") {
            let kv = field.split(separator: "=")
            if kv.count == 2 && kv[0] == "cluster_size" { cluster = Int(kv[1]) ?? cluster }
            if kv.count == 2 && kv[0] == "size" { size = String(kv[1]) }
        }
        let commands = parts[1].split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        return (cluster, size, commands)
    }

    @Test func everyShippedRuleFileIsListed() throws {
        #expect(Self.files.count >= 6)
        let readme = try String(contentsOf: Self.rulesDirectory.appendingPathComponent("README.md"), encoding: .utf8)
        for f in Self.allFiles { #expect(readme.contains(f), "rules/README.md does not list \(f)") }
    }

    /// A file that is not plain blkdebug names the test that runs it, and that test exists.
    @Test func everyExtensionRuleFileHasItsTest() throws {
        let tests = try String(contentsOf: Self.rulesDirectory.deletingLastPathComponent()
            .appendingPathComponent("Tests/IntegrationTests/ActionsTests.swift"), encoding: .utf8)
        let extensions = Self.allFiles.filter { !Self.files.contains($0) }
        #expect(extensions.count >= 7)
        for f in extensions {
            let line = Self.text(f).split(separator: "\n").first { $0.hasPrefix("# blkfault-test: ") }
            let name = try #require(line, "\(f) has neither '# parity-test:' nor '# blkfault-test:'").dropFirst("# blkfault-test: ".count)
            #expect(tests.contains("func \(name)("), "\(f) names \(name), which ActionsTests does not define")
            #expect(tests.contains("\"\(f)\""), "ActionsTests does not use \(f)")
        }
    }

    @Test(arguments: RuleFilesTests.files)
    func behavesLikeBlkdebug(file: String) throws {
        try requireTools()
        let path = Self.rulesDirectory.appendingPathComponent(file).path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let w = try #require(Self.workload(text), "\(file) has no '# parity-test:' line")
        let s = try Scratch()
        let a = try s.image("a.qcow2", size: w.size, clusterSize: w.clusterSize)
        let b = try s.copy(a, to: "b.qcow2")
        var subject = try qemuIOUnderBlkfault(rules: path, image: a, w.commands).normalized
        var reference = try qemuIOUnderBlkdebug(rules: path, image: b, w.commands).normalized
        // Open errors name the image; blkdebug names it as blkdebug:RULES:IMAGE.
        subject.stderr = subject.stderr.replacingOccurrences(of: a, with: "IMG")
        reference.stderr = reference.stderr.replacingOccurrences(of: "blkdebug:\(path):\(b)", with: "IMG")
        #expect(subject == reference)
        #expect(try check(a) == check(b))
        #expect(try bytes(a) == bytes(b))
        // Each file demonstrates a failure: something must have failed.
        #expect(reference.status != 0 || reference.stdout.contains("failed") || reference.stderr.contains("Failed"))
    }
}
