/// `qemu-img check -r` once its metadata walk has run (a second whole read of the
/// active L1 table in a writable process; QEMU 7.2 qcow2_check_refcounts):
///
/// - rebuild_refcount_structure (`-r all` on a refcount error) writes the new refcount
///   blocks, table and header fields with plain bdrv_pwrite and flushes the file: no
///   events;
/// - each leak fix (compare_refcounts → update_refcount, no cluster_free) raises
///   `refblock_alloc` + `refblock_load` (a cache hit), then discards the freed cluster
///   (QCOW2_DISCARD_ALWAYS): the events precede that discard;
/// - (qemu-img amend -o refcount_bits enters at `.fixed` once the old refcount
///   structures are freed: its close is the same;)
/// - the close's flush: `flush_to_os`, the refcount cache's dependency flush of the L2
///   cache (an fdatasync), the refblock write-back (`refblock_update_part`) and the
///   file's own flush; no `flush_to_disk` (no write went through the qcow2 node).
///
/// A read-write open of an image marked dirty (lazy_refcounts, incompatible bit 0) runs
/// the same check with fixes before anything else (qcow2_do_open), then qcow2_mark_clean:
/// the caches' flush goes to the file node (no `flush_to_os`), the refblock write-back
/// raises `refblock_update_part`, and the header rewrite at offset 0 ends the repair;
/// the program's own requests follow (`repairsDirtyImage`, `ended`).
struct CheckRepair: Sendable, Equatable {
    enum Phase: Sendable, Equatable { case walking, fixed, closing, ended }
    private(set) var phase: Phase
    let repairsDirtyImage: Bool

    init(phase: Phase = .walking, repairsDirtyImage: Bool = false) {
        self.phase = phase
        self.repairsDirtyImage = repairsDirtyImage
    }

    /// The open-time repair of a dirty image is over: classify as usual from here.
    var ended: Bool { phase == .ended }

    mutating func events(_ kind: OperationKind, offset: UInt64, clusters: Int, isRefblock: Bool) -> [BlkdebugEvent] {
        switch kind {
        case .discard:
            phase = .fixed
            var events: [BlkdebugEvent] = []
            for _ in 0..<max(1, clusters) { events += [.refblockAlloc, .refblockLoad] }
            return events
        case .flush:
            if phase == .fixed { phase = .closing; return repairsDirtyImage ? [] : [.flushToOS] }
            return []
        case .write:
            if repairsDirtyImage, offset == 0 { phase = .ended; return [.pwritev] }
            return phase == .closing && isRefblock ? [.refblockUpdatePart, .pwritev] : [.pwritev]
        default:
            return []
        }
    }
}
