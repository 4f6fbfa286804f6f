/// Storing persistent bitmaps at close (QEMU 7.2 qcow2_store_persistent_dirty_bitmaps,
/// from qcow2_inactivate), lined up with real blkdebug's events under gdb
/// (Tests/parity/tools/events_diff.py). It starts with a second read of the bitmap
/// directory in a writable process (the first is the open's):
///
/// - before that read, the close's flush of the qcow2 node with nothing to write back:
///   `flush_to_os`, and `flush_to_disk` when write requests went through the node;
/// - each bitmap's data clusters, its table and the new directory: one qcow2_alloc_clusters
///   each (`cluster_alloc` — at the refblock read when the refcount cache misses —, then
///   `refblock_alloc` + `refblock_load` per refblock), written with plain bdrv_pwrite (no
///   write_aio); the refcount cache's write-back (`refblock_update_part`), a flush and the
///   header (update_ext_header_and_dir) with no events;
/// - after the header and its flush: the old directory freed, then each replaced bitmap's old table read,
///   its data clusters freed (each discarded) and the table freed: one `cluster_free` +
///   `refblock_alloc` + `refblock_load` per free, raised before the next I/O; the frees
///   still owed all before the close's refblock write-back, which ends it.
struct BitmapStore: Sendable, Equatable {
    enum Phase: Sendable, Equatable { case allocating, freeing }
    private(set) var phase = Phase.allocating
    /// An allocation's cluster_alloc was raised at its refblock read.
    private var allocationStarted = false
    /// The header was rewritten: its flush ends the allocations.
    private var headerWritten = false
    /// Frees QEMU makes before the I/O that follows (one each), or before the close's
    /// refblock write-back (all that are left).
    private var freesOwed = 0
    /// The close's refblock write-back came: the store is over.
    private(set) var done = false

    private static let free: [BlkdebugEvent] = [.clusterFree, .refblockAlloc, .refblockLoad]

    /// The events before `op`; `newBlocks`: refblocks an allocation into unreferenced space
    /// updates (for writes), `tableDataClusters`: the non-zero entries of an old bitmap
    /// table this read loads (for reads in the free phase).
    mutating func events(_ kind: OperationKind, region: Region, isHeaderRewrite: Bool, newBlocks: Int,
                         tableDataClusters: Int) -> [BlkdebugEvent] {
        switch phase {
        case .allocating:
            switch (kind, region) {
            case (.read, .refcountBlock):
                if allocationStarted { return [] }
                allocationStarted = true
                return [.clusterAlloc]
            case (.write, .refcountBlock):
                return [.refblockUpdatePart, .pwritev]
            case (.write, .header) where isHeaderRewrite:
                headerWritten = true
                return [.pwritev]
            case (.flush, _) where headerWritten:
                phase = .freeing
                freesOwed = 1  // the old directory, freed before the next I/O
                return []
            case (.write, .unreferenced):
                var events: [BlkdebugEvent] = allocationStarted ? [] : [.clusterAlloc]
                for _ in 0..<max(1, newBlocks) { events += [.refblockAlloc, .refblockLoad] }
                allocationStarted = false
                return events + [.pwritev]
            case (.write, _): return [.pwritev]
            case (.writeZeroes, _): return [.pwritevZero]
            default: return []
            }
        case .freeing:
            if kind == .write, case .refcountBlock = region {
                var events: [BlkdebugEvent] = []
                for _ in 0..<freesOwed { events += Self.free }
                freesOwed = 0
                done = true
                return events + [.refblockUpdatePart, .pwritev]
            }
            var events: [BlkdebugEvent] = []
            if freesOwed > 0 { events = Self.free; freesOwed -= 1 }
            if kind == .read {
                // An old table: its data clusters, then the table itself, are freed next.
                freesOwed += tableDataClusters + 1
            }
            switch kind {
            case .write: events.append(.pwritev)
            case .writeZeroes: events.append(.pwritevZero)
            default: break
            }
            return events
        }
    }
}
