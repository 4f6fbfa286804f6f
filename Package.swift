// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "blkfault",
    products: [
        // LD_PRELOAD=libblkfault.so: the C shim plus the engine, Swift stdlib linked in statically.
        .library(name: "blkfault", type: .dynamic, targets: ["BlkfaultPreload", "CShim"]),
        .executable(name: "blkfault-cli", targets: ["blkfault"]),
        // For Benchmarks/ (a separate package that depends on this one by path).
        .library(name: "BlkfaultEngine", targets: ["BlkfaultEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Plumbing: libc entry points, fd -> image table, re-entrancy guard. No policy.
        .target(name: "CShim", path: "shim", publicHeadersPath: "include"),
        // The engine: rule files, blkdebug semantics, qcow2 shadow model. Standard library only.
        .target(name: "BlkfaultEngine", path: "Sources/BlkfaultEngine"),
        // The C ABI the shim calls, plus process-global state. Standard library and Glibc only.
        .target(
            name: "BlkfaultPreload",
            dependencies: ["BlkfaultEngine", "CShim"],
            path: "Sources/BlkfaultPreload",
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-Xlinker", "--version-script=\(Context.packageDirectory)/shim/exports.map"])]
        ),
        .executableTarget(
            name: "blkfault",
            dependencies: [
                "BlkfaultEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/blkfault"
        ),
        .testTarget(name: "BlkfaultEngineTests", dependencies: ["BlkfaultEngine"]),
        // Runs real qemu-io / qemu-img under the built libblkfault.so; links neither the shim nor the engine.
        .testTarget(name: "IntegrationTests", dependencies: []),
    ]
)
