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
        program = arguments.first.map { String($0.split(separator: "/", omittingEmptySubsequences: false).last ?? "") } ?? ""
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

    public var isQemuImgRebase: Bool { program.hasPrefix("qemu-img") && subcommand == "rebase" }

    /// `qemu-img resize --shrink`: its first I/O after an L2 load frees clusters past the
    /// new end (qcow2_cluster_discard); no write request can come before it.
    public var isQemuImgShrink: Bool {
        program.hasPrefix("qemu-img") && subcommand == "resize" && arguments.contains("--shrink")
    }

    /// `qemu-img amend -o compat=0.10` (or `v2`): a downgrade, whose qcow2_expand_zero_clusters
    /// looks up each L2 table's own refcount (qcow2_get_refcount, no event) before it reads
    /// the table; only a zero cluster in a table it read allocates.
    public var isQemuImgDowngrade: Bool {
        guard program.hasPrefix("qemu-img"), subcommand == "amend" else { return false }
        var options: [Substring] = []
        for (i, a) in arguments.enumerated() {
            if a == "-o", i + 1 < arguments.count { options += arguments[i + 1].split(separator: ",") }
            else if a.hasPrefix("-o"), a.count > 2, !a.hasPrefix("--") { options += a.dropFirst(2).split(separator: ",") }
        }
        return options.contains { $0 == "compat=0.10" || $0 == "compat=v2" }
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
        let commands = qemuIoCommands
        return !commands.isEmpty && commands.allSatisfy { c in
            let words = c.split(separator: " ")
            return (words.first == "write" || words.first == "read") && words.dropFirst().contains("-b")
        }
    }

    /// qemu-io given its commands with `-c` (not interactive), none of them a `flush` or
    /// `aio_flush`: the only flushes of the node that no write request starts are the
    /// close's.
    public var isQemuIoWithoutFlushCommand: Bool {
        let commands = qemuIoCommands
        return !commands.isEmpty && !commands.contains { c in
            let first = c.split(separator: " ").first
            return first == "flush" || first == "aio_flush"
        }
    }

    /// qemu-io's `-c`/`--cmd` commands, in order (empty for any other program).
    var qemuIoCommands: [String] {
        guard program.hasPrefix("qemu-io") else { return [] }
        var commands: [String] = []
        var i = 1
        while i < arguments.count {
            if arguments[i] == "-c" || arguments[i] == "--cmd", i + 1 < arguments.count { commands.append(arguments[i + 1]); i += 2; continue }
            if arguments[i].hasPrefix("--cmd=") { commands.append(String(arguments[i].dropFirst(6))) }
            i += 1
        }
        return commands
    }
}
