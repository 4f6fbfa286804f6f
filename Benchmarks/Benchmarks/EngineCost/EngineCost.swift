// Engine micro-benchmarks (issue 7): cost per classified operation on a recorded
// operation sequence, allocations per operation, shadow-model memory, and the
// engine's locking under 8 threads. No syscalls are measured: the image is in memory.
import Benchmark
import BlkfaultEngine
import EngineWorkloads
import Foundation
import Synchronization

let benchmarks: @Sendable () -> Void = {
    let recording = Recording.load()
    // Built once: the closures below run once per measured iteration.
    let replay = Player(recording)
    let steady = Player.steady(recording)
    let sequence = "replay \(recording.name) (\(recording.ops.count) ops)"

    // The harness's own cost per iteration (its clock reads, its malloc counting):
    // subtract it from the per-op figures below.
    Benchmark(
        "baseline: empty iteration",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal], timeUnits: .nanoseconds,
            warmupIterations: 10_000, maxDuration: .seconds(5), maxIterations: 200_000)
    ) { _ in
        sink(0)
    }

    // The whole sequence: warmed up by one pass, every operation measured three times.
    let wholeSequence = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds, warmupIterations: recording.ops.count,
        maxDuration: .seconds(10), maxIterations: 3 * recording.ops.count)
    let steadyPath = Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds, warmupIterations: 10_000,
        maxDuration: .seconds(10), maxIterations: 1_000_000)

    // One operation per measured iteration (before, then after as the preload does):
    // the percentiles are per operation, the clock read included.
    Benchmark(
        "engine per op: \(sequence)",
        configuration: wholeSequence
    ) { _ in
        replay.step()
    }

    // The steady path alone: guest data reads and writes on allocated clusters,
    // after the whole sequence was replayed once (every L2 table known).
    Benchmark(
        "engine per op, steady path: data reads and writes",
        configuration: steadyPath
    ) { _ in
        steady.step()
    }

    // The same two without a trace (and no action rules): the preload then asks only
    // for the decision (ImageEngine.decide) and skips `after` where it changes nothing.
    let replayUntraced = Player(recording)
    let steadyUntraced = Player.steady(recording)
    Benchmark(
        "engine per op, untraced: \(sequence)",
        configuration: wholeSequence
    ) { _ in
        replayUntraced.stepUntraced()
    }
    Benchmark(
        "engine per op, untraced, steady path: data reads and writes",
        configuration: steadyPath
    ) { _ in
        steadyUntraced.stepUntraced()
    }

    // Same work split over threads contending for one image's lock, as QEMU's
    // worker threads do; 1 thread is the baseline. Per-op figures via the scaling factor.
    for threads in [1, 8] {
        Benchmark(
            "engine locked, \(threads) thread(s): 80000 ops",
            configuration: .init(
                metrics: [.wallClock, .cpuTotal], timeUnits: .nanoseconds,
                scalingFactor: .kilo, maxDuration: .seconds(10), maxIterations: 50)
        ) { benchmark in
            let shared = SharedEngine(recording)
            benchmark.startMeasurement()
            shared.run(threads: threads, opsPerRun: 80_000)
        }
    }

    // Shadow-model memory of a 1 TiB image with 10 % of its clusters allocated,
    // after every L2 table and refblock went through the engine (qemu-img check).
    for clusterBits in [16, 12] as [UInt32] {
        Benchmark(
            "shadow memory: 1 TiB, 10% allocated, \(1 << (clusterBits - 10)) KiB clusters",
            configuration: .init(
                metrics: [.custom("heap bytes", useScalingFactor: false),
                          .custom("bytes per tracked table", useScalingFactor: false),
                          .custom("tracked tables", useScalingFactor: false)],
                maxIterations: 1)
        ) { benchmark in
            let m = ShadowMemory.measure(clusterBits: clusterBits)
            benchmark.measurement(.custom("heap bytes", useScalingFactor: false), m.bytes)
            benchmark.measurement(.custom("tracked tables", useScalingFactor: false), m.tables)
            benchmark.measurement(.custom("bytes per tracked table", useScalingFactor: false), m.bytes / max(1, m.tables))
            FileHandle.standardError.write(Data("shadow memory \(1 << (clusterBits - 10)) KiB clusters: \(m.bytes) bytes (\(m.bytes >> 20) MiB), \(m.tables) tables (\(m.l2) L2, \(m.refblocks) refblocks), \(m.dataClusters) data clusters\n".utf8))
        }
    }
}
