/// QEMU 7.2's qcow2_co_pwritev_part over several L2 tables (`write 0 1M` with 1 KiB
/// clusters: 8 chunks of 128 KiB). Each chunk allocates its table (l2_allocate, ending with
/// the L1 entry) and then its data clusters, which has no I/O of its own; the chunk's data
/// task usually gets to its write only after the next chunk's l2_allocate has written the
/// refcount block back, which then holds the chunk's new data clusters beside the next
/// table. blkdebug raises the data allocation's events (`cluster_alloc refblock_alloc
/// refblock_load`) before that write-back and only `write_aio` at the data write; when the
/// data write comes first, it carries them (the write-back then holds only the table).
struct ChunkAllocationOrder: Sendable {
    /// An l2_allocate's L1 entry went out and the data allocation that follows it showed
    /// no I/O yet (a zero write's tables have none: the next write-back then holds a table only).
    private var dataPending = false
    /// Host clusters (indices) whose data allocation's events a write-back raised.
    private var ahead: Set<UInt64> = []
    /// The pending data allocation reached its refcount block's end with no block after
    /// it: alloc_refcount_block hooks one up and the allocation is retried.
    private var retriedIsData = false
    /// The request being decided is data whose allocation was raised ahead (a chunk
    /// before's): it leaves the pending allocation alone.
    private var aheadWrite = false
    /// The previous request was such data (read only when the classifier's
    /// previousWasAllocatingWrite says the previous request was a data write).
    private var previousWasAheadWrite = false

    /// The cluster of the table whose L1 entry went out last, when the write showed it:
    /// the pending data run starts right after it (the free-cluster search goes on there).
    private var linkedTable: UInt64?

    /// An l2_allocate wrote its L1 entry (`table`: the new table's cluster index, if known).
    mutating func tableLinked(table: UInt64? = nil) { dataPending = true; linkedTable = table }

    /// A pending data allocation whose events a write-back raises ahead.
    struct AheadRun: Equatable {
        /// Refcount blocks its update_refcount visits (one refblock_alloc refblock_load each).
        var blocks = 1
        /// The run ends at the block's end and the next allocation (a table) starts in the
        /// block after, which is not there yet: the flush is alloc_refcount_block's for it.
        var nextCrosses = false
    }

    /// An allocation's write-back (not a retry's) of a refcount block in which `allocated`
    /// clusters, unwritten, got their first refcount: whether it holds the pending data
    /// allocation's clusters before the next allocation's, a table allocated after them
    /// (first fit: the block's last new cluster). Those count as raised ahead from now.
    /// `reachesEnd`: the new clusters run to the block's last entry: then the data
    /// allocation itself started the flush (alloc_refcount_block), unless there are more of
    /// them than one data allocation takes (`maxDataClusters`, an L2 slice's entries): the
    /// table then ends at the block's end.
    /// `blockFirst`, `entries`: the block's first cluster and its refcount entries; when the
    /// data in it starts there and its run began after the linked table in an earlier
    /// block (one that exists: its refcounts go out later in the same flush), the run spans
    /// those blocks, and its clusters there count as raised ahead too.
    mutating func dataAhead(allocated: [UInt64], reachesEnd: Bool, nextCovered: Bool,
                            maxDataClusters: Int, blockFirst: UInt64 = 0, entries: UInt64 = 1) -> AheadRun? {
        guard dataPending else { return nil }
        dataPending = false
        if reachesEnd && allocated.count <= maxDataClusters {
            if !nextCovered && allocated.count == maxDataClusters {
                // A whole run (an L2 slice of data) ending at the block's end: the next
                // allocation, a table, is the one that needs the new block.
                ahead.formUnion(allocated)
                return AheadRun(nextCrosses: true)
            }
            // alloc_refcount_block's flush for the next block: the data allocation's own
            // events are raised here as the allocation's (the caller's), its retry follows.
            if !nextCovered { ahead.formUnion(allocated); retriedIsData = true }
            return nil
        }
        // (More than a data allocation and a table: something else.)
        guard allocated.count >= 2, allocated.count <= maxDataClusters + 1 else { return nil }
        let data = allocated.dropLast()
        ahead.formUnion(data)
        var run = AheadRun()
        if let table = linkedTable, let first = data.first, first == blockFirst, table + 1 < first,
           Int(first - table - 1) + data.count <= maxDataClusters, entries > 0 {
            ahead.formUnion((table + 1)..<first)
            run.blocks += Int(first / entries - (table + 1) / entries)
        }
        return run
    }

    /// The new refcount block (at reftable index `block`) is the first I/O of
    /// alloc_refcount_block (the L2 cache was clean: the chunk before's data still in
    /// flight), the pending data allocation's: nil if none is pending. Else the blocks
    /// before it that its run's update visited (its clusters there count as raised ahead:
    /// their block goes out in the same flush), and whether the run ended at the block
    /// before's end (a whole run: the next allocation, a table, needs the new block).
    mutating func newBlockFirst(block: UInt64, entries: UInt64, maxDataClusters: Int) -> (blocks: Int, tableCrosses: Bool)? {
        guard dataPending, let table = linkedTable, entries > 0 else { return nil }
        let start = table + 1, blockFirst = block * entries
        guard start <= blockFirst, blockFirst - start <= UInt64(maxDataClusters) else { return nil }
        dataPending = false
        ahead.formUnion(start..<blockFirst)
        let blocks = start < blockFirst ? Int(block - start / entries) : 0
        if blockFirst - start == UInt64(maxDataClusters) { return (blocks, true) }
        retriedIsData = true
        return (blocks, false)
    }

    /// A write-back whose new clusters are all a data run's raised ahead at another block's
    /// write-back: the rest of that flush.
    func allRaisedAhead(_ clusters: [UInt64]) -> Bool {
        !clusters.isEmpty && !ahead.isEmpty && clusters.allSatisfy { ahead.contains($0) }
    }

    /// A write-back during a retry after a hookup (`retry`: RefblockAllocation.retryEvents):
    /// when the retried allocation is a chunk's data, its clusters here count as raised
    /// ahead, and true for the first one: it is the next allocation's flush, whose events
    /// follow the retry's.
    mutating func retryWrittenBack(retry: [BlkdebugEvent]?, allocated: [UInt64]) -> Bool {
        guard retriedIsData, let retry else { return false }
        ahead.formUnion(allocated)
        return !retry.isEmpty
    }

    func raisedAhead(_ cluster: UInt64) -> Bool { !ahead.isEmpty && ahead.contains(cluster) }

    /// A data write of `clusters`, `fresh` of them not raised ahead (nor zeroed); some were.
    mutating func dataWritten(_ clusters: [UInt64], fresh: Int) {
        for c in clusters { ahead.remove(c) }
        aheadWrite = fresh == 0
    }

    /// A data write whose clusters' refcounts a write-back set already, their allocation's
    /// events not raised there (the order was missed): a chunk before's data all the same,
    /// which leaves the pending allocation alone (its events are raised here, late).
    mutating func lateDataWritten() { aheadWrite = true }

    /// The request being classified is data of a chunk before (`dataWritten` with no fresh
    /// cluster, `lateDataWritten`): its task ran late, beside the allocations that follow.
    var writingAheadData: Bool { aheadWrite }

    /// The end of a request's classification; `otherWrite`: a write other than a refcount
    /// or L1 write-back or a rewrite of data, which shows the pending data allocation (or
    /// that there is none), unless it is data raised ahead. Returns whether it was that.
    mutating func opEnded(otherWrite: Bool) -> Bool {
        defer { previousWasAheadWrite = aheadWrite; aheadWrite = false; justCrossed = false }
        if otherWrite && !aheadWrite { dataPending = false }
        return aheadWrite
    }

    /// An L2 write-back right after data raised ahead, with no refcount block covering the
    /// file's end: alloc_refcount_block's L2 cache flush for the pending data allocation,
    /// which starts right at a new block (the one before is full). It is retried after
    /// the hookup.
    mutating func crossesAtStart() -> Bool {
        guard previousWasAheadWrite, dataPending else { return false }
        dataPending = false
        retriedIsData = true
        justCrossed = true
        return true
    }

    /// Another write (RefblockAllocation.otherWrite): a retry is over (not at the L2
    /// write-back that `crossesAtStart` just took for the one starting).
    mutating func otherWrite() { if !justCrossed { retriedIsData = false } }
    private var justCrossed = false
}
