import Foundation
import Testing

/// What blkfault puts into every process. libblkfault.so, the preloaded shim, is C: it
/// exports the hooks (shim/hooks.def) and nothing else and needs libc alone, so a process
/// that opens no image maps nothing more. libblkfault-engine.so, which the shim dlopens at
/// the first matching open, exports its C ABI only (Sources/BlkfaultPreload/exports.map;
/// the Swift symbols stay local) and maps no libstdc++.so (linked in statically, see
/// Package.swift).
@Suite struct ExportsTests {
    /// `nm -D --defined-only` lines of global symbols: (type letter, name).
    func globalExports(_ library: String) throws -> [(String, String)] {
        let out = try run("/usr/bin/nm", ["-D", "--defined-only", library])
        #expect(out.status == 0, "\(out)")
        return out.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 3, let t = f[1].first, t.isUppercase else { return nil }
            return (String(f[1]), String(f[2]))
        }
    }

    /// readelf's DT_NEEDED entries.
    func needed(_ library: String) throws -> [String] {
        let out = try run("/usr/bin/readelf", ["-dW", library])
        #expect(out.status == 0, "\(out)")
        return out.stdout.split(separator: "\n").filter { $0.contains("(NEEDED)") }.compactMap { line in
            guard let open = line.lastIndex(of: "["), let close = line.lastIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        }
    }

    @Test func theShimExportsTheHooksAndNothingElse() throws {
        let hooks = DoctorTests.hookedNames
        try #require(hooks.count > 40, "shim/hooks.def not read")
        let exports = try globalExports(Built.library)
        let names = exports.map(\.1)
        for hook in ["open", "openat", "pread64", "pwritev", "fdatasync", "close", "io_submit"] {
            #expect(names.contains(hook), "\(hook) must stay exported")
        }
        // The linker's own section markers are the only other global names.
        let other = names.filter { !hooks.contains($0) && !["__bss_start", "_edata", "_end"].contains($0) }
        #expect(other.isEmpty, "libblkfault.so exports more than its hooks: \(other.prefix(10))")
    }

    @Test func theShimNeedsLibcAlone() throws {
        #expect(try needed(Built.library) == ["libc.so.6"])
        let out = try run("/usr/bin/nm", ["-D", Built.library])
        let swift = out.stdout.split(separator: "\n").filter { $0.contains("swift") }
        #expect(swift.isEmpty, "libblkfault.so refers to the Swift runtime: \(swift.prefix(3))")
    }

    @Test func theEngineExportsItsABIAndNothingElse() throws {
        let names = Set(try globalExports(Built.engine).map(\.1))
        let abi: Set = ["blkfault_engine_attach", "blkfault_engine_attach_backing", "blkfault_engine_before", "blkfault_engine_before_unfiltered", "blkfault_engine_after",
                        "blkfault_engine_detach", "blkfault_engine_bypass", "blkfault_engine_exit", "blkfault_engine_steady_table"]
        #expect(names == abi, "libblkfault-engine.so exports \(names.symmetricDifference(abi).sorted().prefix(10)) beyond or short of its ABI")
    }

    /// Sources/CPreloadSupport/command_line.c stands in for the Swift runtime's
    /// CommandLine.cpp, whose static initializer parses /proc/self/maps at every load.
    @Test func theEngineLinksNoArgvGrabber() throws {
        let out = try run("/usr/bin/nm", [Built.engine])
        #expect(out.status == 0, "\(out)")
        let symbols = out.stdout.split(separator: "\n")
        #expect(symbols.contains { $0.hasSuffix(" _swift_stdlib_getUnsafeArgvArgc") }, "the runtime's argv entry point is missing")
        let grabber = symbols.filter { $0.contains("argvGrabber") || $0.contains("_GLOBAL__sub_I_CommandLine") }
        #expect(grabber.isEmpty, "libblkfault-engine.so links the runtime's CommandLine.cpp: \(grabber.prefix(3))")
    }

    /// Sources/CPreloadSupport/backtrace_settings.c stands in for the Swift runtime's
    /// Backtrace.cpp, whose static initializer looks for swift-backtrace at every load
    /// (and would install crash handlers in the program where it found one).
    @Test func theEngineLinksNoBacktracer() throws {
        let out = try run("/usr/bin/nm", [Built.engine])
        #expect(out.status == 0, "\(out)")
        let symbols = out.stdout.split(separator: "\n")
        #expect(symbols.contains { $0.hasSuffix(" _swift_backtraceSettings") }, "the runtime's backtracer settings are missing")
        let backtracer = symbols.filter {
            $0.contains("_GLOBAL__sub_I_Backtrace") || $0.contains("swift_copyAuxiliaryExecutablePath") || $0.contains("_swift_installCrashHandler")
        }
        #expect(backtracer.isEmpty, "libblkfault-engine.so links the runtime's Backtrace.cpp: \(backtracer.prefix(3))")
    }

    @Test func theEngineNeedsNoLibstdcxx() throws {
        let libs = try needed(Built.engine)
        #expect(libs.contains("libc.so.6"), "\(libs)")
        #expect(!libs.contains { $0.contains("libstdc++") || $0.contains("swift") }, "\(libs)")
    }
}
