import ArgumentParser
import BlkfaultEngine
import Foundation

/// `blkfault run -c RULES [-i GLOB]... [--trace FILE] [--library PATH] -- CMD ARGS...`
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command with libblkfault.so preloaded.",
        discussion: """
            Checks RULES first: a problem prints FILE:LINE: message and exits 1 without running CMD. \
            Then replaces itself with CMD (found through PATH) with LD_PRELOAD=libblkfault.so prepended \
            to any existing LD_PRELOAD, BLKFAULT_CONFIG=RULES, BLKFAULT_IMAGE=the -i globs joined by ':' \
            (unset without -i: every qcow2 file the command opens is a target) and BLKFAULT_TRACE=FILE \
            if given. Paths are made absolute. Unless `blkfault doctor` would say a clean yes for CMD, \
            its one-line verdict is printed on stderr first.

            The library is --library, else $BLKFAULT_LIBRARY, else libblkfault.so next to this binary, \
            else ../lib/libblkfault.so; libblkfault-engine.so must be next to it (or at $BLKFAULT_ENGINE).

            Exit status: the command's own; 1 on a rule file problem; 127 if the command is not found, \
            126 if it cannot be executed.
            """
    )

    @Option(name: [.customShort("c"), .customLong("config")], help: ArgumentHelp("blkdebug rule file.", valueName: "RULES"))
    var rules: String

    @Option(name: [.customShort("i"), .customLong("image")],
            help: ArgumentHelp("Only images whose path matches GLOB (repeatable).", valueName: "GLOB"))
    var images: [String] = []

    @Option(help: ArgumentHelp("Write a trace of recognised events to FILE.", valueName: "FILE"))
    var trace: String?

    @Option(help: ArgumentHelp("Seed for rules with a probability (sets BLKFAULT_SEED).", valueName: "N"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Directory of [break] control sockets (sets BLKFAULT_CONTROL).", valueName: "DIR"))
    var control: String?

    @Option(help: ArgumentHelp("Share the blkdebug state among all processes of the run through FILE (emptied first: the state starts at 1; sets BLKFAULT_SHARED_STATE).", valueName: "FILE"))
    var sharedState: String?

    @Option(help: ArgumentHelp("The libblkfault.so to preload.", valueName: "PATH"))
    var library: String?

    @Flag(help: ArgumentHelp("Report a target's allocated size (fstat's st_blocks) as at least its length, as QEMU sees it over blkdebug, which cannot learn it: qcow2 then never takes a file with holes for a metadata-preallocated image (sets BLKFAULT_ALLOCATED_SIZE=length). Off, the program sees the file as it is."))
    var allocatedSizeAsLength = false

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The command and its arguments (after --).", valueName: "CMD"))
    var command: [String] = []

    func run() throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard let program = argv.first else { throw BlkfaultError.noCommand }

        try RuleCheck.load(rules)
        let rulesPath = Paths.absolute(rules)
        let lib = try Paths.library(option: library)

        setenv("LD_PRELOAD", Preloading.ldPreload(adding: lib), 1)
        setenv("BLKFAULT_CONFIG", rulesPath, 1)
        if images.isEmpty {
            unsetenv("BLKFAULT_IMAGE")
        } else {
            setenv("BLKFAULT_IMAGE", images.map(Paths.absolute).joined(separator: ":"), 1)
        }
        if let trace { setenv("BLKFAULT_TRACE", Paths.absolute(trace), 1) }
        if let seed { setenv("BLKFAULT_SEED", String(seed), 1) }
        if let control { setenv("BLKFAULT_CONTROL", Paths.absolute(control), 1) }
        if allocatedSizeAsLength { setenv("BLKFAULT_ALLOCATED_SIZE", "length", 1) }
        if let sharedState {
            let path = Paths.absolute(sharedState)
            guard FileManager.default.createFile(atPath: path, contents: Data()) else {
                throw BlkfaultError.cannotOpen(path, "cannot create the shared state file")
            }
            setenv("BLKFAULT_SHARED_STATE", path, 1)
        }

        // The doctor's verdict, unless it is a clean yes: a run that cannot see the image's
        // I/O should not look like one where no rule fired.
        if let report = try? Doctor.examine(argv), report.verdict != .yes {
            printError(report.line)
        }

        fflush(nil)
        let cArgs = argv.map { strdup($0) } + [nil]
        execvp(program, cArgs)
        let err = errno
        switch err {
        case ENOENT, ENOTDIR: throw BlkfaultError.commandNotFound(program)
        default: throw BlkfaultError.cannotExecute(program, String(cString: strerror(err)))
        }
    }
}

enum Preloading {
    /// LD_PRELOAD with `library` first, keeping what the environment already preloads
    /// (run, trace and sweep all start their targets this way).
    static func ldPreload(adding library: String) -> String {
        let existing = ProcessInfo.processInfo.environment["LD_PRELOAD"] ?? ""
        return existing.isEmpty ? library : library + ":" + existing
    }
}
