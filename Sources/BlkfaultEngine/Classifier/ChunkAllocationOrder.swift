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
    /// The last write was data whose allocation was raised ahead (a chunk before's): it
    /// leaves the pending allocation alone.
    private var lastWriteAhead = false

    /// An l2_allocate wrote its L1 entry.
    mutating func tableLinked() { dataPending = true }

    /// An allocation's write-back (not a retry's) of a refcount block in which `allocated`
    /// clusters, unwritten, got their first refcount: whether it holds the pending data
    /// allocation's clusters before the next allocation's, a table allocated after them
    /// (first fit: the block's last new cluster). Those count as raised ahead from now.
    /// `reachesEnd`: the new clusters run to the block's last entry (then the data
    /// allocation itself started the flush, or the two cannot be told apart).
    mutating func dataAhead(allocated: [UInt64], reachesEnd: Bool, nextCovered: Bool) -> Bool {
        guard dataPending else { return false }
        dataPending = false
        if reachesEnd {
            // alloc_refcount_block's flush for the next block: the data allocation's own
            // events are raised here as the allocation's (the caller's), its retry follows.
            if !nextCovered { ahead.formUnion(allocated); retriedIsData = true }
            return false
        }
        guard allocated.count >= 2 else { return false }
        ahead.formUnion(allocated.dropLast())
        return true
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
        lastWriteAhead = fresh == 0
    }

    /// A write other than a refcount or L1 write-back or a rewrite of data: the pending data
    /// allocation was seen (or there is none), unless it was data raised ahead.
    mutating func allocationSeen() {
        if lastWriteAhead { lastWriteAhead = false } else { dataPending = false }
    }

    /// Another write (RefblockAllocation.otherWrite): a retry is over.
    mutating func otherWrite() { retriedIsData = false }
}
