/// The full flush of the qcow2 node that ends each write request in writethrough
/// mode (and every explicit flush and close): `flush_to_os`, then the cache
/// write-backs (qcow2_write_caches), then `flush_to_disk` and blkdebug's own flush
/// (the fdatasync) — `flush_to_disk` only from the second completed request on.
///
/// Write-backs carry no fdatasync of their own, except the dependency flush of
/// the cache written first: after an allocation the refcount cache goes first,
/// after a free the L2 cache. So an fdatasync right after the first cache's
/// write-backs is that dependency flush when the other cache is dirty too, and
/// the final flush otherwise.
struct FullFlush: Sendable {
    enum Phase: Sendable {
        case idle
        /// A guest request changed metadata or data; its flush comes next.
        case requestDone
        case writingBack
    }
    private(set) var phase = Phase.idle
    /// Write requests that completed (the qcow2 node's write generation).
    private(set) var completedRequests = 0
    /// What the current request left dirty in the caches.
    private var dirtyL2 = false, dirtyRefcounts = false
    private var wroteL2 = false, wroteRefcounts = false
    /// A flush qcow2 starts itself (bdrv_flush in qcow2_update_snapshot_refcount): no
    /// write request came through the qcow2 node, so no flush_to_disk; its dependency
    /// syncs and write-backs last until the next other I/O.
    private var internalFlush = false
    /// The program writes back (qemu-img's default cache mode): its flushes are the
    /// close's, after the requests, and the node's write generation counts them, so a
    /// flush raises flush_to_disk when a write request came since the last one. In
    /// writethrough mode (qemu-io) each request's flush runs inside the request, before
    /// the generation counts it: flush_to_disk from the second request on.
    var writeback = false
    private var wroteSinceFlush = false
    /// The program's requests all go to the VM state area (qemu-io `write -b`): they
    /// bypass the node's write path, so none is followed by a flush of its own and the
    /// node's write generation never moves (no flush_to_disk). What they dirty is still
    /// written back by the close's flush. Without this, a chunk's data write finishing
    /// after an allocation's sync made that sync look like a request's flush (under load).
    var vmstateOnly = false

    /// The image is marked dirty (lazy_refcounts): qcow2_write_caches leaves the refcount
    /// cache alone (qcow2_need_accurate_refcounts), it is written back at close.
    var refcountsDeferred = false {
        didSet { if refcountsDeferred { dirtyRefcounts = false } }  // marked dirty mid-request
    }

    /// A guest write, discard or zero write finished. `l2DependsOnRefcounts`: an L2
    /// entry changed with no allocation (a preallocated zero cluster written), and the L2
    /// cache was made to depend on the refcount cache all the same.
    /// `compressed`: a compressed write, which the block layer's writethrough emulation
    /// (FUA) skips: no flush of its own, the node's write generation moves unflushed.
    mutating func requestFinished(dirtiedL2: Bool, dirtiedRefcounts: Bool, l2DependsOnRefcounts: Bool = false,
                                  compressed: Bool = false) {
        if !vmstateOnly { wroteSinceFlush = true }
        if compressed && !vmstateOnly { compressedSinceFlush = true }
        lastRequestCompressed = compressed
        if case .writingBack = phase { return }
        if !vmstateOnly && !awaitingTable { phase = .requestDone }
        dirtyL2 = dirtyL2 || dirtiedL2
        dirtyRefcounts = dirtyRefcounts || (dirtiedRefcounts && !refcountsDeferred)
        // With lazy refcounts QEMU sets no dependency (qcow2_need_accurate_refcounts).
        l2Dependency = l2Dependency || (l2DependsOnRefcounts && !refcountsDeferred)
    }
    /// The L2 cache depends on the refcount cache (see requestFinished).
    private var l2Dependency = false
    /// A compressed write request completed since the last full flush (requestFinished):
    /// in writethrough mode too the next full flush raises flush_to_disk.
    private var compressedSinceFlush = false
    private var lastRequestCompressed = false
    /// The last full flush came right after a compressed write request in writethrough
    /// mode: no request's own flush (compressed writes have none), so the close's (or a
    /// `flush` command's).
    private(set) var lastFlushFollowedCompressed = false

    /// The close of a lazy_refcounts image marked dirty: its flush finds nothing to write
    /// (flush_to_os, then flush_to_disk with no fdatasync: no write since the last), and
    /// qcow2_inactivate writes the refcount cache back after it.
    func deferredRefcountsClose() -> [BlkdebugEvent] {
        completedRequests > 0 ? [.flushToOS, .flushToDisk] : [.flushToOS]
    }

    /// The request is still allocating (a large request is split into chunks whose
    /// data writes finish while later chunks allocate): no flush yet.
    mutating func requestContinues() {
        if case .requestDone = phase { phase = .idle }
    }

    /// An allocation's own write that QEMU syncs at once (a refcount cache flush, an L1
    /// entry): the next fdatasync is that sync. A data write of an earlier chunk that
    /// reached the file after the allocation's write (its worker thread ran late) may
    /// have finished in between: it did not end the request, a later chunk is allocating.
    /// `tableFollows`: an allocation's refcount cache flush, for a table it writes next
    /// (l2_allocate's new L2 table): see `awaitingTable`.
    mutating func allocationWrite(tableFollows: Bool = false) {
        requestContinues()
        syncOwed = true
        tableOwed = tableOwed || tableFollows
        awaitingTable = false
    }
    private var syncOwed = false
    private var tableOwed = false
    /// An allocation's refcount cache flush and its sync went out; the table it allocated
    /// is written next (the L2 cache flush of l2_allocate). Until then the request is still
    /// allocating: an earlier chunk's data write finishing now (its worker thread ran late)
    /// ends nothing, and an fdatasync is the L2 cache flush's dependency flush (a guest
    /// write's link made the L2 cache depend on the refcount cache; bdrv_flush of the file
    /// syncs only because that data write came since the last sync): no event. Ended by
    /// any I/O but a data write (`tableWaitEnded`).
    private(set) var awaitingTable = false
    mutating func tableWaitEnded() { awaitingTable = false }
    /// The last fdatasync was an allocation's own (allocationWrite).
    private(set) var lastSyncWasOwed = false

    /// A cache write-back outside an allocation: the first one starts the flush.
    mutating func writeBack(l2: Bool) -> [BlkdebugEvent] {
        awaitingTable = false
        var events: [BlkdebugEvent] = []
        if case .writingBack = phase {} else {
            phase = .writingBack
            events.append(.flushToOS)
        }
        if l2 { wroteL2 = true; dirtyL2 = true } else { wroteRefcounts = true; dirtyRefcounts = true }
        return events
    }

    /// qcow2 flushes the node itself; the caller raised flush_to_os.
    mutating func startInternal() {
        phase = .writingBack
        internalFlush = true
    }

    /// An fdatasync.
    mutating func sync() -> [BlkdebugEvent] {
        if internalFlush, case .writingBack = phase { return [] }
        lastSyncWasOwed = false
        if awaitingTable { return [] }
        if syncOwed {
            syncOwed = false
            let table = tableOwed
            tableOwed = false
            if case .writingBack = phase {} else { phase = .idle; lastSyncWasOwed = true; awaitingTable = table; return [] }
        }
        switch phase {
        case .idle:
            return []
        case .requestDone:
            if l2Dependency && dirtyL2 && !dirtyRefcounts {
                // The L2 write-back's dependency flush (the refcount cache has nothing to
                // write): the L2 write-back and the final fdatasync follow.
                phase = .writingBack
                l2Dependency = false
                return [.flushToOS]
            }
            // Nothing was dirty: this is blkdebug's flush itself.
            return finish(prefix: [.flushToOS])
        case .writingBack:
            let otherCachePending = (dirtyL2 && !wroteL2) || (dirtyRefcounts && !wroteRefcounts)
            return otherCachePending ? [] : finish(prefix: [])
        }
    }

    /// Any I/O that is not part of the flush: a flush whose write-backs are done
    /// has ended without an fdatasync of its own (blkdebug saw no write since).
    mutating func interrupted() -> [BlkdebugEvent] {
        guard case .writingBack = phase else { return [] }
        return finish(prefix: [])
    }

    private mutating func finish(prefix: [BlkdebugEvent]) -> [BlkdebugEvent] {
        if internalFlush {
            internalFlush = false
            phase = .idle
            dirtyL2 = false; dirtyRefcounts = false; wroteL2 = false; wroteRefcounts = false
            l2Dependency = false
            return prefix
        }
        let events = flushToDiskNext ? prefix + [.flushToDisk] : prefix
        lastFlushFollowedCompressed = lastRequestCompressed && !writeback
        lastRequestCompressed = false
        completedRequests += 1
        wroteSinceFlush = false
        compressedSinceFlush = false
        phase = .idle
        dirtyL2 = false; dirtyRefcounts = false; wroteL2 = false; wroteRefcounts = false
        l2Dependency = false
        return events
    }

    /// Whether the node's next flush raises flush_to_disk (its write generation moved).
    var flushToDiskNext: Bool {
        !vmstateOnly && (writeback ? wroteSinceFlush : completedRequests > 0 || compressedSinceFlush)
    }

    /// A request finished and its flush has not begun: another guest write that
    /// dirties nothing leaves the flush exactly as it is.
    var isRequestDone: Bool { if case .requestDone = phase { return true } else { return false } }
    var isIdle: Bool { if case .idle = phase { return true } else { return false } }
    /// `interrupted()` would end a flush (otherwise it returns nothing and changes nothing).
    var isWritingBack: Bool { if case .writingBack = phase { return true } else { return false } }
}
