// The engine's side of the steady pre-filter (blkfault_steady.h): every use of an
// image's engine goes through `withEngine`, which, for an image with a filter, marks
// the change (seqlock), forgets the filter's clusters when the shadow model changed,
// learns the clusters of the request in hand, and publishes what can be skipped now.
import BlkfaultEngine
import Glibc
import CPreloadSupport

/// BLKFAULT_STATS set: count the requests the pre-filter let through, and say so at exit.
let steadyCounting: Bool = {
    guard let v = getenv("BLKFAULT_STATS") else { return false }
    return v.pointee != 0
}()

extension TrackedImage {
    /// `body` on the engine under its lock. `op`: the request being decided, whose
    /// clusters the filter learns (after `body`, in the state it left).
    @inline(__always)
    func withEngine<R>(touching op: Operation? = nil, _ body: (inout ImageEngine) -> R) -> R {
        guard let filter = steady else { return engine.withLock(body) }
        return engine.withLock { engine in
            blkfault_steady_begin(filter)
            let layout = engine.layoutVersion
            let result = body(&engine)
            publishSteady(filter, &engine, layoutWas: layout, op)
            return result
        }
    }
}

/// Ends the change `withEngine` began (the engine lock held).
func publishSteady(_ filter: OpaquePointer, _ engine: inout ImageEngine, layoutWas layout: UInt64, _ op: Operation?) {
    // A region may have changed: no cluster stays known.
    if engine.layoutVersion != layout { blkfault_steady_clear(filter) }
    let bits = engine.clusterBits
    if let op, bits > 0, op.kind == .read || op.kind == .write {
        let first = op.offset >> UInt64(bits)
        let last = op.length > 0 ? op.offset.addingReportingOverflow(op.length - 1).partialValue >> UInt64(bits) : first
        blkfault_steady_set_word(filter, first >> 6, engine.wholeDataWord(first >> 6))
        if last >> 6 != first >> 6, last > first {
            blkfault_steady_set_word(filter, last >> 6, engine.wholeDataWord(last >> 6))
        }
    }
    var rules: Int32 = 0
    let kinds = engine.steadyKinds { sector, iotypes in
        guard rules < BLKFAULT_STEADY_RULES else { return false }
        blkfault_steady_rule(filter, rules, sector, UInt32(iotypes.rawValue))
        rules += 1
        return true
    }
    blkfault_steady_end(filter, (kinds.reads ? BLKFAULT_STEADY_READS : 0) | (kinds.writes ? BLKFAULT_STEADY_WRITES : 0),
                        rules, bits)
}

/// At exit, with BLKFAULT_STATS: how many requests of each image skipped the engine.
func reportSteadyStats(_ list: [TrackedImage]) {
    guard steadyCounting else { return }
    for image in list {
        guard let filter = image.steady else { continue }
        writeAll(2, "blkfault: stats: \(image.path): \(blkfault_steady_hits(filter)) requests let through by the steady pre-filter\n")
    }
}
