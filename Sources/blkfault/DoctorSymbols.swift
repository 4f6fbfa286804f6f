import CHookTable

/// How blkfault stands to a libc entry point a program imports.
enum SymbolStanding: String {
    /// Interposed and decoded: the engine sees, traces and can fail it.
    case hooked
    /// Interposed only to notice it: forwarded untouched, reported at run time when it
    /// touches an image (shim/hooks.def's "bypasses" rows).
    case watched
    /// Not interposed: I/O through it is neither seen nor noticed.
    case unseen
}

/// A way to a file around blkfault, with why.
struct BypassSymbol {
    var name: String
    var way: String
    /// Does I/O through it only matter if the program uses it on the image? (All do;
    /// these are the ones a program commonly imports for other files: not a verdict on their own.)
    var commonElsewhere: Bool
}

enum HookTable {
    /// shim/hooks.def's rows: symbol -> family (compiled in from hooks.def itself).
    static let rows: [String: String] = {
        var out: [String: String] = [:]
        for i in 0..<blkfault_hook_count() {
            let row = blkfault_hook_row(Int32(i))
            out[String(cString: row.name)] = String(cString: row.family)
        }
        return out
    }()

    /// The families of hooks.def that only report (hooks.c: "bypasses"). io_submit
    /// performs requests on images itself, unless BLKFAULT_AIO=report.
    static let reportingFamilies: Set<String> = [
        "uring_init", "uring_init_params", "uring_init_mem", "uring_files", "uring_files_tags",
        "uring_files_update", "uring_files_update_tag", "mmap", "syscall",
    ]

    /// Does the library only report linux-aio (BLKFAULT_AIO=report) instead of performing it?
    static func aioReportOnly(_ environment: [String: String]) -> Bool { environment["BLKFAULT_AIO"] == "report" }

    static func standing(_ symbol: String, aioReportOnly: Bool = false) -> SymbolStanding? {
        if let family = rows[symbol] {
            if family == "io_submit" { return aioReportOnly ? .watched : .hooked }
            return reportingFamilies.contains(family) ? .watched : .hooked
        }
        return unseen(symbol) != nil ? .unseen : nil
    }

    /// Calls that reach files without going through any hooked entry point.
    static func unseen(_ symbol: String) -> BypassSymbol? {
        if rows[symbol] != nil { return nil }
        if symbol.hasPrefix("io_uring_") {
            return BypassSymbol(name: symbol, way: "io_uring (liburing)", commonElsewhere: false)
        }
        switch symbol {
        case "aio_read", "aio_read64", "aio_write", "aio_write64", "aio_fsync", "aio_fsync64", "lio_listio", "lio_listio64":
            return BypassSymbol(name: symbol, way: "POSIX AIO, whose threads call pread/pwrite inside libc", commonElsewhere: false)
        case "splice", "vmsplice", "tee", "sendfile", "sendfile64", "copy_file_range":
            return BypassSymbol(name: symbol, way: "kernel-side copy (\(symbol))", commonElsewhere: false)
        case "fopen", "fopen64", "freopen", "freopen64", "fdopen", "fread", "fwrite", "fread_unlocked", "fwrite_unlocked":
            return BypassSymbol(name: symbol, way: "stdio, whose read/write/open calls inside libc cannot be interposed",
                                commonElsewhere: true)
        case "process_vm_writev", "mremap", "msync":
            return BypassSymbol(name: symbol, way: "memory mapping (\(symbol))", commonElsewhere: true)
        default:
            return nil
        }
    }
}
