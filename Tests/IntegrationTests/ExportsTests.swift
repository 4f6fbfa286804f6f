import Foundation
import Testing

/// What libblkfault.so puts into every process: its exported symbols are the hooks
/// and the engine's C ABI only (shim/exports.map; the Swift symbols stay local), and
/// it maps no libstdc++.so (linked in statically, see Package.swift).
@Suite struct ExportsTests {
    /// `nm -D --defined-only` lines of global symbols: (type letter, name).
    func globalExports() throws -> [(String, String)] {
        let out = try run("/usr/bin/nm", ["-D", "--defined-only", Built.library])
        #expect(out.status == 0, "\(out)")
        return out.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 3, let t = f[1].first, t.isUppercase else { return nil }
            return (String(f[1]), String(f[2]))
        }
    }

    @Test func onlyHooksAndTheEngineABIAreExported() throws {
        let names = try globalExports().map(\.1)
        for hook in ["open", "openat", "pread64", "pwritev", "fdatasync", "close", "blkfault_engine_before", "blkfault_engine_attach"] {
            #expect(names.contains(hook), "\(hook) must stay exported")
        }
        let swift = names.filter { $0.hasPrefix("$s") || $0.hasPrefix("_$s") || $0.hasPrefix("swift_") }
        #expect(swift.count == 0, "Swift symbols exported, e.g. \(swift.prefix(3))")
        #expect(names.count < 150, "\(names.count) exported symbols")
    }

    @Test func needsNoLibstdcxx() throws {
        let out = try run("/usr/bin/readelf", ["-d", Built.library])
        #expect(out.status == 0, "\(out)")
        #expect(!out.stdout.contains("libstdc++"), "\(out.stdout)")
    }
}
