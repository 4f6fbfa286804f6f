// swift-tools-version:6.0
import PackageDescription
import Foundation

// libblkfault-engine.so links libstdc++ statically when GCC's libstdc++.a is installed:
// a process that loads it then maps and relocates no libstdc++.so (Benchmarks/, scripts/bench).
// shim/static-cxx/libstdc++.so is a linker script that turns the Swift driver's
// -lstdc++ into libstdc++.a; --exclude-libs ALL keeps its symbols local.
let gccDir = "/usr/lib/gcc/x86_64-linux-gnu"
let staticCxx: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: gccDir)) ?? [])
    .filter { FileManager.default.fileExists(atPath: "\(gccDir)/\($0)/libstdc++.a") }
    .sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }
    .last.map { ["-L\(Context.packageDirectory)/shim/static-cxx", "-L\(gccDir)/\($0)"] } ?? []

// Type metadata of concrete generic types (dictionaries, arrays of the engine's structs)
// through accessor functions, not the runtime's demangler: the demangler cost a matched
// process ~0.5 M instructions when the engine attached (issue 7, callgrind).
// The engine linked by lld with packed relative relocations (DT_RELR, read by glibc ≥ 2.36):
// its ~20,000 R_X86_64_RELATIVE entries cost the dlopen at the first matching open ~0.25 M
// instructions as RELA, a few thousand as RELR (issue 7, callgrind). lld ships with Swift's
// Linux toolchains (next to swiftc, where clang's -fuse-ld=lld finds it); without it, the
// default linker and plain RELA.
// No implicit `import _StringProcessing` in the engine's two modules: a module that imports
// it autolinks libswift_StringProcessing.a and libswift_RegexParser.a, whose retained
// conformance records kept ~3,100 relative relocations (~26 K instructions at the dlopen)
// in the engine for code it never runs (issue 7, s8-7a).
// -disable-type-layout: copies and destroys of the engine's aggregates (a RuleSet's arrays,
// an optional section) are lowered field by field, not through the value witnesses of
// their type's metadata, which the runtime had to instantiate first (Optional<T> and
// Array<T> metadata: ~50 K instructions at the first attach; issue 7, s8-7a).
let packedRelocs: [String] = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
    .contains { FileManager.default.isExecutableFile(atPath: "\($0)/ld.lld") && FileManager.default.fileExists(atPath: "\($0)/swiftc") }
    ? ["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"] : []

let directMetadata: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors",
                                                              "-Xfrontend", "-disable-implicit-string-processing-module-import",
                                                              "-Xfrontend", "-disable-type-layout"])]

let package = Package(
    name: "blkfault",
    products: [
        // LD_PRELOAD=libblkfault.so: the C shim alone (needs libc only). At the first open of
        // a matching image it dlopens libblkfault-engine.so from its own directory, so a
        // process that opens no image loads no Swift (shim/engine.c).
        .library(name: "blkfault", type: .dynamic, targets: ["CShim"]),
        // The engine and its C ABI (shim/include/blkfault_engine.h), Swift stdlib linked in statically.
        .library(name: "blkfault-engine", type: .dynamic, targets: ["BlkfaultPreload"]),
        .executable(name: "blkfault-cli", targets: ["blkfault"]),
        // For Benchmarks/ (a separate package that depends on this one by path).
        .library(name: "BlkfaultEngine", targets: ["BlkfaultEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The CLI spawns targets (trace, sweep) with these; the preloaded engine never links them.
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
    ],
    targets: [
        // Plumbing: libc entry points, fd -> image table, re-entrancy guard. No policy.
        // SwiftPM links every product with swiftc; these keep libblkfault.so free of Swift:
        // -nostartfiles drops swiftrt.o (its constructor calls into the runtime), and
        // -static-stdlib turns -lswiftCore into an archive nothing is taken from (no
        // DT_NEEDED, no rpath to the toolchain); shim/as-needed/ makes the -lstdc++ and -lm
        // that come with it AS_NEEDED. ExportsTests checks that libc is all it needs.
        .target(
            name: "CShim", path: "shim", exclude: ["as-needed", "static-cxx"], publicHeadersPath: "include",
            linkerSettings: [.unsafeFlags(["-nostartfiles", "-static-stdlib", "-L\(Context.packageDirectory)/shim/as-needed"])]
        ),
        // The engine: rule files, blkdebug semantics, qcow2 shadow model. Standard library only.
        .target(name: "BlkfaultEngine", dependencies: ["CEngineLock"], path: "Sources/BlkfaultEngine", swiftSettings: directMetadata),
        // The futex lock LockedEngine holds around each engine (blkfault_lock.h): the one lock
        // of an image in the preload, taken inline; a C target since Swift cannot call futex(2).
        .target(name: "CEngineLock", path: "Sources/CEngineLock"),
        // The C ABI the shim calls, plus process-global state. Standard library and Glibc only.
        // Exports only that ABI (exports.map).
        .target(
            name: "BlkfaultPreload",
            dependencies: ["BlkfaultEngine", "CPreloadSupport"],
            path: "Sources/BlkfaultPreload",
            exclude: ["exports.map"],
            swiftSettings: directMetadata,
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xclang-linker", "-static-libgcc"] + staticCxx + packedRelocs + ["-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/BlkfaultPreload/exports.map"])]
        ),
        // The engine's per-thread helpers that Swift cannot write (blkfault_thread.h).
        .target(name: "CPreloadSupport", path: "Sources/CPreloadSupport"),
        // libelf for `blkfault doctor`; only the CLI links it, never libblkfault.so.
        .systemLibrary(
            name: "CLibElf",
            path: "Sources/CLibElf",
            pkgConfig: "libelf",
            providers: [.apt(["libelf-dev"])]
        ),
        // shim/hooks.def's rows (name, family) as data, for `blkfault doctor`.
        .target(name: "CHookTable", path: "Sources/CHookTable"),
        .executableTarget(
            name: "blkfault",
            dependencies: [
                "BlkfaultEngine",
                "CLibElf",
                "CHookTable",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Sources/blkfault"
        ),
        .testTarget(name: "BlkfaultEngineTests", dependencies: ["BlkfaultEngine"]),
        // Runs real qemu-io / qemu-img under the built libblkfault.so; links neither the shim nor the engine.
        .testTarget(name: "IntegrationTests", dependencies: []),
    ]
)
