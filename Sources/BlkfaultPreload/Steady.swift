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
    func withEngine<R>(touching op: SteadyRequest? = nil, _ body: (inout ImageEngine) -> R) -> R {
        engine.withLock { engine in
            guard let filter = steady else { return body(&engine) }
            // Both kinds closed: readers skip nothing and look at nothing else, whatever
            // `body` changes; the change begins only if publishing must reopen a kind.
            let begun = blkfault_steady_closed(filter) == 0
            if begun { blkfault_steady_begin(filter) }
            let layout = engine.steadyLayoutVersion()
            let result = body(&engine)
            publishSteady(filter, &engine, layoutWas: layout, op, begun: begun)
            return result
        }
    }
}

/// Ends the change `withEngine` began (the engine lock held); `begun`: whether it called
/// blkfault_steady_begin (it did not when both kinds were closed).
func publishSteady(_ filter: OpaquePointer, _ engine: inout ImageEngine, layoutWas layout: UInt64, _ op: SteadyRequest?,
                   begun: Bool) {
    // A closed filter after a qcow2 metadata read that left the classifier's steady path
    // shut and the layout as it was (every read of `qemu-img check`): what follows would
    // set no word and leave the kinds closed; asked with flags alone (~50 instructions a
    // read fewer than steadyView; issue 7).
    if !begun, let op, engine.steadyStaysShut(afterRead: op, layoutWas: layout) { return }
    var rules: Int32 = 0
    // One call for everything (by address: each non-mutating call copied the whole engine).
    let view = engine.steadyView(touching: op) { sector, iotypes in
        guard rules < BLKFAULT_STEADY_RULES else { return false }
        blkfault_steady_rule(filter, rules, sector, UInt32(iotypes.rawValue))
        rules += 1
        return true
    }
    // Closed before and staying closed, the layout the same (a qcow2 metadata read in
    // `qemu-img check`): no reader can see the words, so they are set without a change
    // (the next publication that opens a kind begins one), and the kinds stay as they are.
    if !begun && !view.reads && !view.writes && view.layoutVersion == layout {
        if let w = view.firstWord { blkfault_steady_set_word(filter, w.index, w.bits) }
        if let w = view.lastWord { blkfault_steady_set_word(filter, w.index, w.bits) }
        return
    }
    if !begun { blkfault_steady_begin(filter) }
    // A cluster may have stopped being guest data: none stays known.
    if view.layoutVersion != layout { blkfault_steady_clear(filter) }
    if let w = view.firstWord { blkfault_steady_set_word(filter, w.index, w.bits) }
    if let w = view.lastWord { blkfault_steady_set_word(filter, w.index, w.bits) }
    blkfault_steady_end(filter, (view.reads ? BLKFAULT_STEADY_READS : 0) | (view.writes ? BLKFAULT_STEADY_WRITES : 0),
                        rules, view.clusterBits)
}

/// At exit, with BLKFAULT_STATS: how many requests of each image skipped the engine.
func reportSteadyStats(_ list: [TrackedImage]) {
    guard steadyCounting else { return }
    for image in list {
        guard let filter = image.steady else { continue }
        writeAll(2, "blkfault: stats: \(image.path): \(blkfault_steady_hits(filter)) requests let through by the steady pre-filter\n")
    }
}
