// swift-tools-version:6.1
// Engine micro-benchmarks, kept out of the main package so CI's build stays fast.
// Run with scripts/bench-engine (records the operation sequence first), or
// `BLKFAULT_BENCH_DIR=DIR swift package benchmark` here.
import PackageDescription

let package = Package(
    name: "blkfault-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "blkfault", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(name: "CHeap"),
        // The recorded sequence, its replay, and the synthetic 1 TiB image.
        .target(name: "EngineWorkloads", dependencies: [.product(name: "BlkfaultEngine", package: "blkfault"), "CHeap"]),
        // The same replay without the benchmark harness, for valgrind --tool=callgrind.
        .executableTarget(name: "EngineProfile", dependencies: [.product(name: "BlkfaultEngine", package: "blkfault"), "EngineWorkloads"]),
        .executableTarget(
            name: "EngineCost",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BlkfaultEngine", package: "blkfault"),
                "EngineWorkloads",
            ],
            path: "Benchmarks/EngineCost",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
