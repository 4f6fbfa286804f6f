/// What the program is, from its command line, where QEMU's block graph depends on the
/// command and the image's I/O cannot show it (qemu-img rebase reads the old backing
/// file through a node of its own; qemu-io -C reads it through the overlay, with the
/// same I/O).
public struct ProgramCommand: Sendable, Equatable {
    /// The program's name (argv[0] without its directory).
    public var program: String
    /// qemu-img's subcommand: the first argument that is neither an option nor the value
    /// of qemu-img's one global option with a value (-T/--trace).
    public var subcommand: String?

    /// The command line as given.
    public var arguments: [String]

    public init(arguments: [String]) {
        self.arguments = arguments
        // What follows the last "/" character, as `split(separator: "/")` cuts (no array of
        // substrings: issue 7, s8-7a).
        program = arguments.first.map { first in
            first.lastIndex(of: "/").map { String(first[first.index(after: $0)...]) } ?? first
        } ?? ""
        var i = 1
        subcommand = nil
        while i < arguments.count {
            let a = arguments[i]
            if a == "-T" || a == "--trace" { i += 2; continue }
            if a.hasPrefix("-") { i += 1; continue }
            subcommand = a.isEmpty ? nil : a
            break
        }
    }

    /// From /proc/self/cmdline's bytes: the arguments are what NUL bytes separate
    /// (`split(separator: 0, omittingEmptySubsequences: false)`: no bytes give one empty
    /// argument, a trailing NUL an empty last one), cut straight from the buffer.
    public init(commandLine bytes: UnsafeBufferPointer<UInt8>) {
        var args: [String] = []
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0 {
            args.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self))
            start = i + 1
        }
        args.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<bytes.count]), as: UTF8.self))
        self.init(arguments: args)
    }

    public var isQemuImgRebase: Bool { program.hasPrefix("qemu-img") && subcommand == "rebase" }

    /// `qemu-img resize --shrink`: its first I/O after an L2 load frees clusters past the
    /// new end (qcow2_cluster_discard); no write request can come before it.
    public var isQemuImgShrink: Bool {
        program.hasPrefix("qemu-img") && subcommand == "resize" && arguments.contains("--shrink")
    }

    /// The cache mode its images are written in is writeback: qemu-img's default
    /// (BDRV_DEFAULT_CACHE) unless `-t writethrough|directsync`; not convert (its target
    /// is `unsafe`: no flush reaches the disk) nor bench (its own flush options). qemu-io
    /// defaults to writethrough.
    public var writesBack: Bool {
        if program.hasPrefix("qemu-io") { return qemuIoWritesBack }
        guard program.hasPrefix("qemu-img"), let sub = subcommand, sub != "convert", sub != "bench" else { return false }
        if let i = arguments.lastIndex(where: { $0 == "-t" }), i + 1 < arguments.count {
            return !["writethrough", "directsync"].contains(arguments[i + 1])
        }
        return true
    }
}

extension ProgramCommand {
    /// qemu-io writes back with `-n`/`--nocache`, `-t none` or `-t writeback` (measured:
    /// three `write 0 4k` sync 5 times instead of 7, no flush per request). `unsafe` is left
    /// as writethrough, like qemu-img convert: no flush of it reaches the disk.
    var qemuIoWritesBack: Bool {
        // qemu-io's options that take a value (their values are never a cache mode).
        let valued: Set<String> = ["-c", "--cmd", "-d", "--discard", "-f", "--format", "-i", "--aio",
                                   "-T", "--trace", "--object"]
        var back = false
        var i = 1
        while i < arguments.count {
            let a = arguments[i]
            var mode: String?
            if valued.contains(a) { i += 2; continue }
            if a == "-t" || a == "--cache" { mode = i + 1 < arguments.count ? arguments[i + 1] : nil; i += 1 }
            else if a.hasPrefix("--cache=") { mode = String(a.dropFirst(8)) }
            else if a.hasPrefix("-t") && !a.hasPrefix("--") { mode = String(a.dropFirst(2)) }
            else if a == "-n" || a == "--nocache" { back = true }
            if let mode { back = mode == "none" || mode == "writeback" }
            i += 1
        }
        return back
    }
}

extension ProgramCommand {
    /// qemu-io whose every `-c` command is a `write -b` or `read -b`: all its requests go to
    /// the VM state area through qcow2's driver directly (bdrv_co_writev_vmstate), so the
    /// node's write generation never moves and no flush ends a request: its only full
    /// flush is the close's, which raises no flush_to_disk.
    public var isQemuIoVmstateOnly: Bool {
        guard program.hasPrefix("qemu-io") else { return false }
        var commands: [String] = []
        var i = 1
        while i < arguments.count {
            if arguments[i] == "-c" || arguments[i] == "--cmd", i + 1 < arguments.count { commands.append(arguments[i + 1]); i += 2; continue }
            if arguments[i].hasPrefix("--cmd=") { commands.append(String(arguments[i].dropFirst(6))) }
            i += 1
        }
        return !commands.isEmpty && commands.allSatisfy { c in
            let words = c.split(separator: " ")
            return (words.first == "write" || words.first == "read") && words.dropFirst().contains("-b")
        }
    }
}
