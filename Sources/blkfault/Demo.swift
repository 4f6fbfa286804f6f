import ArgumentParser
import Foundation

/// `blkfault demo [--keep DIR]`: one fault, injected by blkfault and by real blkdebug, side by side.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inject one l2_alloc_write error with blkfault and with real blkdebug, and compare.",
        discussion: """
            Creates a 64M qcow2 image, writes a rule file failing the first l2_alloc_write with EIO, \
            runs `qemu-io -c 'write 0 4k'` on it under libblkfault.so, checks the image with qemu-img, \
            then does the same through QEMU's own blkdebug driver on a fresh image, and maps the \
            image. Needs qemu-img and qemu-io (Debian: qemu-utils).

            Exit status: 0 when blkfault and blkdebug gave the same results, 1 otherwise.
            """
    )

    @Option(help: ArgumentHelp("Work in DIR and keep it (default: a temporary directory, removed after).", valueName: "DIR"))
    var keep: String?

    @Option(help: ArgumentHelp("The libblkfault.so to preload.", valueName: "PATH"))
    var library: String?

    static let rules = """
        [inject-error]
        event = "l2_alloc_write"
        errno = "5"
        once = "on"

        """

    func run() throws {
        for tool in ["qemu-img", "qemu-io"] where Paths.which(tool) == nil {
            throw BlkfaultError.missingTool(tool)
        }
        let lib = try Paths.library(option: library)
        let fm = FileManager.default
        let dir: String
        if let keep {
            dir = Paths.absolute(keep)
            do {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            } catch {
                throw BlkfaultError.demo("cannot create \(dir): \(error.localizedDescription)")
            }
        } else {
            var tmp = NSTemporaryDirectory()
            while tmp.count > 1 && tmp.hasSuffix("/") { tmp.removeLast() }
            var template = Array((tmp + "/blkfault-demo-XXXXXX").utf8CString)
            guard let p = mkdtemp(&template) else {
                throw BlkfaultError.demo("cannot create a temporary directory: \(String(cString: strerror(errno)))")
            }
            dir = String(cString: p)
        }
        defer { if keep == nil { try? fm.removeItem(atPath: dir) } }

        let me = Paths.executable
        let runner = Runner(directory: dir, environment: ["BLKFAULT_LIBRARY": lib])
        say("blkfault demo in \(dir)\(keep == nil ? " (removed afterwards; --keep DIR keeps it)" : "")")
        say("preloading \(lib)")
        say()

        // 1. The image and the rule file.
        for name in ["demo.qcow2", "blkdebug.qcow2", "demo.conf"] { try? fm.removeItem(atPath: dir + "/" + name) }
        try runner.show(["qemu-img", "create", "-q", "-f", "qcow2", "demo.qcow2", "64M"], mustSucceed: true)
        do {
            try Self.rules.write(toFile: dir + "/demo.conf", atomically: true, encoding: .utf8)
        } catch {
            throw BlkfaultError.demo("cannot write \(dir)/demo.conf: \(error.localizedDescription)")
        }
        say("$ cat demo.conf")
        for line in Self.rules.split(separator: "\n", omittingEmptySubsequences: false).dropLast() { say("  " + line) }
        say()

        // 2. The fault, through blkfault.
        say("# blkfault: the first l2_alloc_write fails with EIO")
        let ours = try runner.show(["qemu-io", "-c", "write 0 4k", "demo.qcow2"],
                                   shown: ["blkfault", "run", "-c", "demo.conf", "-i", "demo.qcow2", "--"],
                                   actual: [me, "run", "-c", "demo.conf", "-i", "demo.qcow2", "--"])
        let ourCheck = try runner.show(["qemu-img", "check", "demo.qcow2"])

        // 3. The same fault, through QEMU's own blkdebug driver.
        say("# real blkdebug, same rules, fresh image")
        try runner.show(["qemu-img", "create", "-q", "-f", "qcow2", "blkdebug.qcow2", "64M"], mustSucceed: true)
        let theirs = try runner.show(["qemu-io", "-c", "write 0 4k", "blkdebug:demo.conf:blkdebug.qcow2"])
        let theirCheck = try runner.show(["qemu-img", "check", "blkdebug.qcow2"])

        // 4. What the image looks like now.
        say("# the layout of demo.qcow2 after the failed write")
        try runner.show(["map", "demo.qcow2"], shown: ["blkfault"], actual: [me])

        // 5. Verdict.
        let sameIO = normalise(ours.output, "demo.qcow2") == normalise(theirs.output, "blkdebug:demo.conf:blkdebug.qcow2")
        let sameCheck = normalise(ourCheck.output, "demo.qcow2") == normalise(theirCheck.output, "blkdebug.qcow2")
            && ourCheck.status == theirCheck.status
        say("qemu-io:        " + (sameIO ? "same output as blkdebug" : "DIFFERENT output from blkdebug") + " (exit \(ours.status) vs \(theirs.status))")
        say("qemu-img check: " + (sameCheck ? "same verdict as blkdebug" : "DIFFERENT verdict from blkdebug") + " (exit \(ourCheck.status) vs \(theirCheck.status))")
        if !(sameIO && sameCheck && ours.status == theirs.status) {
            throw BlkfaultError.demo("blkfault and blkdebug disagree (see above)")
        }
        say("blkfault and blkdebug agree.")
    }

    /// Output with the image's name replaced, so both runs compare equal when they behave the same.
    func normalise(_ s: String, _ name: String) -> String {
        s.replacingOccurrences(of: name, with: "IMAGE")
            .split(separator: "\n")
            .filter { !$0.contains("ops/sec") }   // qemu-io's timing line
            .joined(separator: "\n")
    }
}

/// Runs commands in a directory, printing each as `$ command` and its output indented.
struct Runner {
    let directory: String
    let environment: [String: String]

    struct Result {
        let status: Int32
        let output: String
    }

    @discardableResult
    func show(_ args: [String], shown prefix: [String] = [], actual actualPrefix: [String] = [],
              mustSucceed: Bool = false) throws(BlkfaultError) -> Result {
        say("$ " + (prefix + args).map(shellQuote).joined(separator: " "))
        let argv = actualPrefix.isEmpty ? args : actualPrefix + args
        let result = try execute(argv)
        var lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        while lines.last?.isEmpty == true { lines.removeLast() }
        for line in lines { say(line.isEmpty ? "" : "  " + line) }
        if result.status != 0 { say("  (exit status \(result.status))") }
        say()
        if mustSucceed && result.status != 0 {
            throw .demo("`\(args.joined(separator: " "))` failed")
        }
        return result
    }

    func execute(_ argv: [String]) throws(BlkfaultError) -> Result {
        let p = Process()
        if argv[0].hasPrefix("/") {
            p.executableURL = URL(fileURLWithPath: argv[0])
        } else if let path = Paths.which(argv[0]) {
            p.executableURL = URL(fileURLWithPath: path)
        } else {
            throw .missingTool(argv[0])
        }
        p.arguments = Array(argv.dropFirst())
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        do {
            try p.run()
        } catch {
            throw .cannotExecute(argv[0], error.localizedDescription)
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
        return Result(status: status, output: String(decoding: data, as: UTF8.self))
    }
}

/// Quotes an argument for display the way a shell would need it.
func shellQuote(_ s: String) -> String {
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%")
    if !s.isEmpty && s.allSatisfy({ safe.contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
