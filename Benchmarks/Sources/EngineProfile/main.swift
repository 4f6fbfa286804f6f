// The engine benchmark's replay with nothing around it, for instruction counts:
//   BLKFAULT_BENCH_DIR=DIR valgrind --tool=callgrind .build/release/EngineProfile [steady|replay] [ROUNDS]
//   .build/release/EngineProfile shadow [CLUSTER_BITS]   (the 1 TiB image's shadow model; default 16)
import BlkfaultEngine
import EngineWorkloads

let args = CommandLine.arguments
let what = args.count > 1 ? args[1] : "steady"
let rounds = args.count > 2 ? Int(args[2]) ?? 1 : 1
switch what {
case "shadow":
    let m = ShadowMemory.measure(clusterBits: args.count > 2 ? UInt32(args[2]) ?? 16 : 16)
    print("shadow memory: \(m.bytes) bytes, \(m.tables) tables")
default:
    let recording = Recording.load()
    let player = what == "replay" ? Player(recording) : Player.steady(recording)
    let ops = player.count
    for _ in 0..<(rounds * ops) { player.step() }
    print("\(what): \(rounds * ops) ops")
}
