/// QEMU 7.2's alloc_refcount_block (qcow2-refcount.c) where an allocation's refcount
/// update reaches a cluster no refcount block covers yet, seen from the I/O:
///
/// - The new block is marked dirty and the whole refcount cache is flushed; the other
///   dirty blocks (the allocation's refcounts in the block before) go out in the same
///   flush, in cache order, so `refblock_alloc_write` precedes the first of them, not
///   the new block's own write. When the L2 cache holds entries a guest write linked,
///   the L2 cache flush before it (its dependency) has written those blocks already
///   and the new block goes out alone.
///   That L2 cache flush writes its own dependency first, the refcount cache (the
///   allocation's block so far) and an fdatasync, raising `refblock_alloc` before it;
///   its L2 write-backs are `l2_update`s, not l2_allocate's (writeback mode, dnone).
/// - When the new block's cluster lies in a block that exists already (a retry's: the
///   blocks after the allocated run were hooked up by an earlier round), QEMU sets its
///   refcount there and flushes first, with no event, then writes the new block, all
///   zeros, alone after `refblock_alloc_write`.
/// - After the hookup QEMU returns -EAGAIN: the caller undoes its refcount updates,
///   searches again and redoes them (refblock_alloc + refblock_load per block), and
///   the refcount write-backs up to its next other write belong to that allocation,
///   not to a full flush.
struct RefblockAllocation: Sendable {
    /// `refblock_alloc_write` was raised at an older block's write-back; the new
    /// block's own write in the same flush raises no second one.
    private(set) var writeRaised = false
    /// The refcount table index just hooked up while the caller's retry runs.
    private var hookedIndex: UInt64?
    /// The block whose write-back started alloc_refcount_block for the one hooked up: the
    /// retried allocation starts there (its first write-back may be of either block, in
    /// refcount cache order).
    private var retryFirstIndex: UInt64?
    private var retryRaised = false
    /// The refcount table index an allocation's run reached with no block there yet.
    private var awaitedIndex: UInt64?
    /// That allocation starts in the awaited block (none of it in the block before).
    private var awaitedFromItsStart = false
    /// The full-flush count when a guest request last dirtied L2 entries.
    private var l2DirtyMark: Int?
    /// fdatasyncs left of the L2 cache flush an allocation's write-back started as its
    /// dependency (its own and the L2 flush's): the L2 write-backs before them are that
    /// flush's.
    private var l2FlushSyncsLeft = 0
    /// alloc_refcount_block's `refblock_alloc` for the awaited block went out before an
    /// earlier write of its flushes (an older block, L2 tables).
    private var announced = false

    /// What an allocation's write-back that reaches its block's end starts.
    enum NewBlockFlush: Equatable {
        /// Nothing of alloc_refcount_block's.
        case none
        /// Its refcount cache flush: refblock_alloc and refblock_alloc_write come first.
        case refcountCache
        /// Its L2 cache flush, whose dependency this write-back is: refblock_alloc
        /// first; refblock_alloc_write comes at the new block's own write.
        case l2Cache
    }

    /// alloc_refcount_block's L2 cache flush is under way (`NewBlockFlush.l2Cache`).
    var inL2CacheFlush: Bool { l2FlushSyncsLeft > 0 }

    /// A guest request changes L2 entries (an allocating write, a zero write, a discard);
    /// `completedRequests` is FullFlush's count, which a full flush increases after
    /// writing the L2 cache back.
    mutating func guestDirtiedL2(completedRequests: Int) { l2DirtyMark = completedRequests }

    /// An allocation's write-back of the refblock at `reftableIndex`: whether the flush
    /// it starts is alloc_refcount_block's for the block after it: the allocation set
    /// refcounts up to the block's last entry and no block covers the next cluster. With
    /// no L2 entry dirty it is the refcount cache flush; with some, the L2 cache flush's
    /// dependency. (`reachesEnd` is false for an allocation the classifier takes to
    /// end exactly at the block's end: an L2 table in its last cluster.) In a retry the new block may land in a block
    /// an earlier round hooked up, and then the flush is the else branch's, with no event.
    /// `startsInNext`: the allocation that needs the block starts in it (a table after a
    /// run that ended at this block's end): its retry undoes nothing.
    mutating func startsNewBlockFlush(reftableIndex: UInt64, reachesEnd: Bool, nextCovered: Bool,
                                      completedRequests: Int, startsInNext: Bool = false) -> NewBlockFlush {
        guard reachesEnd, !nextCovered else { return .none }
        awaitedIndex = reftableIndex + 1
        awaitedFromItsStart = startsInNext
        guard !writeRaised, hookedIndex == nil else { return .none }
        announced = true
        if let mark = l2DirtyMark, completedRequests <= mark {
            l2FlushSyncsLeft = 2
            return .l2Cache
        }
        writeRaised = true
        return .refcountCache
    }

    /// The new block at `reftableIndex` went out first (`newBlockWritten`'s unannounced):
    /// the allocation awaits it; `startsInNext`: none of it lies in the block before.
    mutating func awaitsNewBlock(reftableIndex: UInt64, startsInNext: Bool) {
        awaitedIndex = reftableIndex
        awaitedFromItsStart = startsInNext
    }

    /// An allocation's run waits for a block: a whole-cluster write of zeros to a cluster
    /// whose refcount went out before it is then the else branch's new block (not a table).
    var awaitsBlock: Bool { awaitedIndex != nil }

    /// That block was written.
    mutating func awaitedBlockWritten() { awaitedIndex = nil }

    /// An L2 write-back raised alloc_refcount_block's `refblock_alloc` (its L2 cache flush).
    mutating func announce() { announced = true }

    /// The new block's own write: whether it still raises `refblock_alloc_write`, and
    /// whether it is the first I/O since alloc_refcount_block began (both caches were
    /// clean: its `refblock_alloc` and the allocation's `cluster_alloc` come before it;
    /// after the hookup the retry then raises no second `cluster_alloc`).
    mutating func newBlockWritten() -> (raisesWrite: Bool, unannounced: Bool) {
        defer { writeRaised = false; announced = false }
        return (!writeRaised, !writeRaised && !announced)
    }

    /// The refcount table entry of a new block was written (refblock_alloc_hookup).
    mutating func hookedUp(reftableIndex: UInt64) {
        retryFirstIndex = awaitedIndex == reftableIndex && reftableIndex > 0 && !awaitedFromItsStart
            ? reftableIndex - 1 : nil
        if awaitedIndex == reftableIndex { awaitedIndex = nil }
        hookedIndex = reftableIndex
        retryRaised = false
        announced = false
    }

    /// A retry after a hookup whose events are not raised yet.
    var retryPending: Bool { hookedIndex != nil && !retryRaised }

    // Refcount table growth (alloc_refcount_block's else branch) for an allocation whose
    // write-back reached a block not there yet: after qcow2_refcount_area switches the
    // table and frees the old one, QEMU loads the new block (refblock_load) and returns
    // -EAGAIN; the caller undoes its update (one refblock_alloc refblock_load per block
    // before the new one) and searches again from the freed cluster, reading the refcount
    // blocks after it (cache misses, no event; dirty ones are evicted: written back), then
    // redoes its update (one pair per block) before its next write-back.

    /// The block awaited and where the allocation's run started, when the growth began.
    private var growthAwaited: UInt64?
    private var growthFirst: UInt64?
    /// The table was switched: the undo's events are not raised yet.
    private(set) var growthUndoPending = false
    /// The retry after a growth (not a hookup): its undo was raised before the search.
    private var growthRetry = false

    /// The new block's write began a refcount table growth.
    mutating func tableGrowthStarted() {
        growthAwaited = awaitedIndex
        growthFirst = awaitedIndex.flatMap { awaitedFromItsStart || $0 == 0 ? nil : $0 - 1 }
    }

    /// The grown table was switched in (refblock_alloc_switch_table): the retry starts.
    mutating func tableSwitched() {
        guard let awaited = growthAwaited else { return }
        growthAwaited = nil
        hookedIndex = awaited
        retryFirstIndex = growthFirst
        retryRaised = false
        announced = false
        growthUndoPending = true
        growthRetry = true
    }

    /// The retry after a growth is searching: its write-backs of blocks with no new
    /// refcount are the search's evictions, and its refblock reads its cache misses.
    var inGrowthRetry: Bool { growthRetry && retryPending }

    /// After the old table's free: the new block's load and the undo.
    mutating func growthUndoEvents() -> [BlkdebugEvent] {
        growthUndoPending = false
        guard let hooked = hookedIndex else { return [] }
        var events: [BlkdebugEvent] = [.refblockLoad]
        let first = min(hooked, retryFirstIndex ?? hooked)
        for _ in 0..<Int(min(hooked - first, 64)) { events += [.refblockAlloc, .refblockLoad] }
        return events
    }

    /// A refcount write-back: nil outside a retry; else the retry's events before it
    /// (empty after the first write-back), and the write-back is not a full flush's.
    /// The allocation is taken to start in this block and end in the hooked-up one:
    /// one undo per block before that one, one update per block.
    mutating func retryEvents(reftableIndex: UInt64) -> [BlkdebugEvent]? {
        guard let hooked = hookedIndex else { return nil }
        if retryRaised { return [] }
        retryRaised = true
        let first = min(reftableIndex, retryFirstIndex ?? reftableIndex)
        let spanned = hooked > first ? Int(min(hooked - first, 64)) : 0
        var events: [BlkdebugEvent] = []
        // (After a growth the undo went out before the search.)
        for _ in 0..<((growthRetry ? 1 : 2) * spanned + 1) { events += [.refblockAlloc, .refblockLoad] }
        growthRetry = false
        return events
    }

    /// Another write (data, a table, a header field): the retried allocation went on.
    mutating func otherWrite() {
        hookedIndex = nil; awaitedIndex = nil; l2FlushSyncsLeft = 0
        growthRetry = false; growthUndoPending = false
    }

    /// An fdatasync ends a cache flush: a new block raised early has been written.
    mutating func synced() {
        writeRaised = false
        if l2FlushSyncsLeft > 0 { l2FlushSyncsLeft -= 1 }
    }
}
