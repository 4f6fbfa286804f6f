import Foundation
import Testing

/// What a finished process printed.
struct Outcome: Equatable, CustomStringConvertible {
    var stdout: String
    var stderr: String
    var status: Int32
    var description: String { "status \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }

    /// qemu-io's timing line varies from run to run.
    var normalized: Outcome {
        func clean(_ s: String) -> String {
            s.split(separator: "\n", omittingEmptySubsequences: false).map { line in
                line.contains(" ops; ") ? "TIMING" : String(line)
            }.joined(separator: "\n")
        }
        return Outcome(stdout: clean(stdout), stderr: clean(stderr), status: status)
    }
}

/// The built products live next to the test bundle (.build/<triple>/debug).
enum Built {
    static var directory: URL {
        if let dir = ProcessInfo.processInfo.environment["BLKFAULT_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // swift-testing runs from the .xctest bundle or a helper; walk up to the build dir.
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("libblkfault.so").path) { return url }
            url.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }
    static var library: String { directory.appendingPathComponent("libblkfault.so").path }
    /// What libblkfault.so dlopens, from its own directory, at the first matching open.
    static var engine: String { directory.appendingPathComponent("libblkfault-engine.so").path }
    static var cli: String { directory.appendingPathComponent("blkfault").path }
}

/// A scratch directory with images and rule files, removed at the end.
final class Scratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("blkfault-it-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    func write(_ name: String, _ text: String) throws -> String {
        let p = path(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// `qemu-img create -f qcow2`; returns the image path.
    func image(_ name: String, size: String = "64M", clusterSize: Int? = nil) throws -> String {
        let p = path(name)
        var args = ["create", "-q", "-f", "qcow2"]
        if let c = clusterSize { args += ["-o", "cluster_size=\(c)"] }
        let r = try run("/usr/bin/qemu-img", args + [p, size])
        try #require(r.status == 0, "qemu-img create failed: \(r)")
        return p
    }

    func copy(_ from: String, to name: String) throws -> String {
        let p = path(name)
        try FileManager.default.copyItem(atPath: from, toPath: p)
        return p
    }
}

func run(_ tool: String, _ args: [String], env extra: [String: String] = [:]) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = args
    var env = ProcessInfo.processInfo.environment
    for key in ["LD_PRELOAD", "BLKFAULT_CONFIG", "BLKFAULT_IMAGE", "BLKFAULT_TRACE", "BLKFAULT_MODEL",
                "BLKFAULT_SEED", "BLKFAULT_CONTROL", "BLKFAULT_UNSYNCED_LIMIT", "BLKFAULT_SHARED_STATE",
                "BLKFAULT_ENGINE", "BLKFAULT_STATS"] { env[key] = nil }
    env.merge(extra) { $1 }
    process.environment = env
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes before waiting so a chatty child cannot block.
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Outcome(stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self),
                   status: process.terminationStatus)
}

let qemuIO = "/usr/bin/qemu-io"
let qemuImg = "/usr/bin/qemu-img"

/// qemu-io under libblkfault.so with a rule file, the image matched by path.
func qemuIOUnderBlkfault(rules: String?, image: String, _ commands: [String], trace: String? = nil) throws -> Outcome {
    var env = ["LD_PRELOAD": Built.library, "BLKFAULT_IMAGE": image]
    env["BLKFAULT_CONFIG"] = rules ?? ""
    if let trace { env["BLKFAULT_TRACE"] = trace }
    if rules == nil { env["BLKFAULT_TRACE"] = trace ?? "/dev/null" }
    return try run(qemuIO, ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image], env: env)
}

/// The same commands through QEMU's own blkdebug: the reference.
func qemuIOUnderBlkdebug(rules: String, image: String, _ commands: [String]) throws -> Outcome {
    try run(qemuIO, ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + ["blkdebug:\(rules):\(image)"])
}

func qemuIOPlain(image: String, _ commands: [String]) throws -> Outcome {
    try run(qemuIO, ["-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image])
}

/// `qemu-img check`, with the image's name taken out of the text.
func check(_ image: String) throws -> Outcome {
    var r = try run(qemuImg, ["check", image])
    r.stdout = r.stdout.replacingOccurrences(of: image, with: "IMG")
    r.stderr = r.stderr.replacingOccurrences(of: image, with: "IMG")
    return r
}

func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

/// The tools the integration tests need; a missing one is a failure, not a skip:
/// scripts/test installs them.
func requireTools() throws {
    for tool in [qemuIO, qemuImg, Built.library, Built.engine] {
        try #require(FileManager.default.fileExists(atPath: tool), "missing \(tool): run scripts/test (it installs qemu-utils and builds)")
    }
}
