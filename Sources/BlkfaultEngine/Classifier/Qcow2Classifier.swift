/// The events QEMU 7.2's qcow2 driver raises, inferred from the I/O it does
/// (notes: qemu-blkdebug.md §3.2–3.5). Structural events come from what the
/// I/O touches; procedural ones from where QEMU's algorithms stand:
///
/// - An allocation starts with `cluster_alloc` (unless QEMU extends a host run
///   right after an allocated cluster), then `refblock_alloc` + `refblock_load`
///   per refcount block updated; the refcount cache flush that follows writes
///   the refblock (`refblock_update_part`).
/// - A new L2 table is written to a cluster whose refcount already reached the
///   disk; new guest data to one whose refcount has not.
/// - In writethrough mode every write request ends with a full flush:
///   `flush_to_os`, cache write-backs, then `flush_to_disk` from the second
///   request of the process on.
public struct Qcow2Classifier: EventClassifier, Sendable {
    /// (Its `layoutVersion` tells the preload's steady pre-filter when a cluster may have
    /// stopped being guest data; other changes to it leave the filter's clusters alone.)
    public private(set) var shadow: ShadowImage
    public var modelName: String { Self.modelName }
    public static let modelName = "qemu-7.2"

    private var opened = false
    /// `cluster_alloc` was raised for the allocation in progress.
    private var clusterAllocRaised = false
    /// The allocation in progress extends a host run (qcow2_alloc_clusters_at).
    private var contiguousAllocation = false
    /// The previous I/O loaded an L2 slice with an allocated-then-free boundary.
    private var lastLoadedSliceHasBoundary = false
    private var previousWasL2Load = false
    /// The previous I/O rewrote the whole header cluster (qcow2_update_header).
    private var previousWasHeaderRewrite = false
    /// Since the last whole-header rewrite only reads of guest data and L2 tables came
    /// (qcow2_do_open clearing an unknown autoclear bit, then qemu-io reads): the next
    /// flush is still the close's.
    private var headerRewriteThenReads = false
    /// The last L2 slice read (offset, length).
    private var lastL2Load: (offset: UInt64, length: UInt64) = (0, 0)
    /// The previous I/O was an allocation's own fdatasync: a second one right after it
    /// belongs to the same flush (a data write finished during the first, notes §2.8).
    private var previousWasOwedSync = false
    /// The previous I/O read a refcount block (a free-space search's, when it set
    /// contiguousAllocation).
    private var previousWasRefblockRead = false
    /// The previous I/O was an l1_update (the end of an l2_allocate).
    private var previousWasL1Update = false
    /// The last I/O other than fdatasyncs (and data of a chunk before whose allocation was
    /// raised ahead) was an l1_update: l2_allocate just ended (in writethrough mode its
    /// own sync follows the L1 entry).
    private var l2AllocateJustEnded = false
    /// The table allocation whose L1 entry went out last began right after another
    /// l2_allocate ended: tables allocated back to back with no data between (a zero
    /// write over unallocated L2 ranges, qemu-img convert's zeroing of its target).
    private var tablesBackToBack = false
    /// A retried allocation's data was just written after undoing its update of an
    /// earlier block (update_refcount with -1 makes the refcount cache depend on the L2
    /// cache): linking the data flushes that dependency, an fdatasync with no event.
    private var retryUndoSync = false
    /// The previous I/O was a guest data write that allocated clusters.
    private var previousWasAllocatingWrite = false
    /// The previous I/O read compressed data: a write to a new cluster right after it
    /// is the copy-on-write of a partial write over a compressed cluster.
    private var previousWasCompressedRead = false
    /// L2 tables an L1 shrink dropped (qcow2_shrink_l1_table), freed with no I/O of
    /// their own after the zeroed L1 entries' flush; nil when no shrink is pending.
    private var shrinkDroppedTables: Int?
    /// The program is `qemu-img resize --shrink` (ProgramCommand.isQemuImgShrink).
    private var shrinkCommand = false
    /// Frees whose events a refcount-block read raised ahead of the discard that
    /// carries them (a shrink's qcow2_cluster_discard): skipped there.
    private var freesRaisedAhead = 0
    /// A shrink is in progress (until the header's size is written): its discards
    /// are qcow2's own, not guest requests that a full flush follows.
    private var shrinking = false
    /// The image size in the header was just written (qcow2_co_truncate): qcow2 then
    /// re-reads its options and flushes both caches itself, with no full flush.
    private var resizeCacheFlush = false
    /// Clusters of a table other than L1/L2 whose refcount reached the disk before
    /// it was written (a snapshot table): written in pieces, with no event.
    private var otherTables: Set<UInt64> = []
    /// New L2 tables whose first slice went out (their `l2_alloc_write`s are raised).
    private var newL2Tables: Set<UInt64> = []
    /// Clusters zeroed for an allocation (cluster_alloc_space); their data write follows.
    private var zeroedClusters: Set<UInt64> = []
    /// Host clusters (indices) whose refcount an allocation flush set before anything
    /// was written to them: new tables about to be written.
    private var pendingTables: Set<UInt64> = []
    /// Host clusters (indices) the program wrote while no table pointed to them.
    private var writtenClusters: Set<UInt64> = []
    /// Chunked allocation order (ChunkAllocationOrder.swift).
    private var chunkOrder = ChunkAllocationOrder()
    private var flush = FullFlush()
    /// The request in progress allocated clusters (its refcounts and L2 entries are dirty).
    private var requestAllocated = false {
        didSet { if requestAllocated { refblockAlloc.guestDirtiedL2(completedRequests: flush.completedRequests) } }
    }
    /// A new refcount block's allocation (RefblockAllocation.swift).
    private var refblockAlloc = RefblockAllocation()
    /// A table was replaced (L1 growth, refcount table growth): QEMU frees the old
    /// one right after the header write's flush, with no I/O of its own.
    private var oldTableFreePending = false
    /// Refcount blocks (reftable indices, in order) that cover the replaced table: its
    /// free (one qcow2_free_clusters) loads each, a cache miss being a read of it.
    private var oldTableBlocks: [UInt64] = []
    /// The old table's free dirtied refcount blocks mid-request: the refcount write-back
    /// that comes next is the next allocation's flush (l2_allocate), not a full flush,
    /// and it may start with a block the free alone dirtied.
    private var afterTableFree = false
    /// A refcount write-back came since that free (an fdatasync before one is the
    /// eviction's dependency flush, after one the allocation's own).
    private var tableFreeWrittenBack = false
    /// Such a flush started with a block holding no new refcount (its events raised there).
    private var allocationRefcountFlush = false
    /// Refcount table growth in progress.
    private var growth = Growth.none
    /// The request being decided carries guest data (write_aio was raised for it).
    private var pendingGuestWrite = false
    /// The pending guest write is a compressed one (FullFlush.requestFinished's `compressed`).
    private var pendingCompressedWrite = false
    /// Whether the program opened the image for writing: a read-only user
    /// (qemu-img check, info, map) allocates nothing.
    public var writable = false
    /// Whole reads of the active L1 table. QEMU reads it once at open; a second
    /// read is a metadata walk (qemu-img check), whose L2 reads bypass the L2
    /// cache and so raise no l2_load.
    private var l1TableReads = 0
    /// L2 tables a read-only metadata walk read, not learnt yet (DeferredWalk.swift).
    private var deferredWalk = DeferredWalk()
    /// Whether walk reads are deferred (tests compare against learning each at once).
    public var defersWalkLearning = true
    /// Whether the walk path (`walkTableRead`) is taken where it applies; false: the
    /// general path always (tests compare the two).
    public var usesWalkPath = true
    /// Whether the steady path (`steadyEvents`, and the pre-filter's skips that
    /// `steadyKinds` allows) is taken where it applies; false: the general path always
    /// (tests compare the two).
    public var usesSteadyPath = true

    enum Growth: Sendable { case none, blockWritten, area }

    /// l2_allocate's L2 cache flush is under way (from its first write to the L1 entry):
    /// l2_alloc_write precedes its first write, whichever dirty table that is, and the
    /// other tables it writes back belong to it, not to a full flush.
    private var l2AllocateFlush = false
    /// A write into clusters shared with a snapshot (l2_allocate copied a shared table):
    /// the old table's free makes the refcount cache depend on the L2 cache, so the
    /// request's own dependency flushes come before its full flush (SharedCow).
    private var sharedCow = SharedCow.none
    enum SharedCow: Sendable, Equatable {
        case none
        /// l2_allocate read the shared table (l2_alloc_cow_read).
        case tableCopied
        /// Its L1 entry was written: the old table's free (cluster_free) comes next.
        case oldTableFreePending
        /// The COW read went out; after the data write, linking the new cluster flushes
        /// the L2 cache (an fdatasync, no event).
        case dataWritten
        /// Freeing the old data cluster (cluster_free) flushes the refcount cache.
        case l2Synced
        case refcountsWritten
        /// Then its refcount update, and the request's full flush.
        case refcountsSynced
    }
    /// Old data clusters the write into shared clusters replaces (each freed).
    private var sharedCowClusters = 1
    /// A write over a compressed cluster went out (COW and data in one write): linking the
    /// new cluster frees the compressed one (CompressedCowFree).
    private var compressedCowFree = CompressedCowFree.none
    enum CompressedCowFree: Sendable, Equatable {
        case none
        /// The COW's data write went out: the free (cluster_free) comes next, and its
        /// update_refcount first flushes the L2 cache's dependency, the refcount cache.
        case dataWritten
        /// That refcount write-back went out: the free's refcount update (refblock_alloc,
        /// refblock_load: cache hits) comes before the next other I/O.
        case dependencyWritten
    }
    /// The data write of a COW from a shared cluster comes next (write_aio, cow_write).
    private var cowWritePending = false
    /// qemu-img commit emptying the image (MakeEmpty.swift).
    private var makeEmpty = MakeEmpty.none
    /// qemu-img snapshot (SnapshotFlow.swift).
    var snapshot = SnapshotFlow()
    /// Reads of the bitmap directory (the open's is the first; BitmapStore.swift).
    private var bitmapDirectoryReads = 0
    /// Storing persistent bitmaps at close (BitmapStore.swift); nil outside it.
    private var bitmapStore: BitmapStore?
    /// qemu-img check -r after its walk (CheckRepair.swift); nil before it.
    private var checkRepair: CheckRepair?
    /// qemu-img amend -o refcount_bits switched to new refcount structures: the old
    /// refblocks and table are freed next (qcow2_change_refcount_order), one
    /// qcow2_free_clusters each, with no I/O but the new refblock's cache miss.
    private var refcountOrderFrees = 0
    /// qemu-img amend -o refcount_bits is writing the new refcount structures (from
    /// the first new refblock until the header switch).
    private var refcountOrderRewrite = false
    /// The program just asked the image's allocated size (fstat): the refcount-block
    /// reads that follow are qcow2's metadata-preallocation check, not a free-space search.
    private var metadataPreallocationCheck = false
    /// The flush being decided is one of the close's (the dependency flush after `qemu-img
    /// check -r` or `amend`, the flush after a header rewrite, the last flush of a full
    /// flush in writeback mode): bdrv_close ignores its error and qcow2_close flushes both
    /// caches again, so blkdebug failing it once leaves no trace (ImageEngine performs it
    /// instead of failing the fdatasync, which file-posix would latch).
    public private(set) var flushRetriedAtClose = false

    /// The incompatible-features field was just written with bdrv_pwrite_sync: the next
    /// flush is that write's own and raises nothing.
    private var headerFeaturesSync = false
    /// The image was marked dirty when opened (CheckRepair.repairsDirtyImage).
    private var dirtyAtOpen: Bool

    public init(shadow: ShadowImage) {
        self.shadow = shadow
        dirtyAtOpen = shadow.header.incompatibleFeatures & 1 != 0
        flush.refcountsDeferred = dirtyAtOpen
    }

    /// What the program's command line implies (ImageEngine.noteCommand).
    mutating func noteCommand(_ command: ProgramCommand) {
        // The program writes back: see FullFlush.writeback.
        flush.writeback = command.writesBack
        // qemu-img rebase flushes the image only at the close.
        writebackFlushIsClose = command.writesBack && command.isQemuImgRebase
        shrinkCommand = command.isQemuImgShrink
        // See FullFlush.vmstateOnly.
        flush.vmstateOnly = command.isQemuIoVmstateOnly
    }
    /// The program writes back and flushes only at the close (qemu-img rebase).
    private var writebackFlushIsClose = false

    public mutating func eventsBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        if op.kind == .stat { metadataPreallocationCheck = opened; return [] }
        var region = shadow.regionInPlace(at: op.offset)
        if !deferredWalk.isEmpty, deferredWalkMatters(op, region) {
            materializeDeferredWalk(file: file)
            region = shadow.regionInPlace(at: op.offset)
        }
        if case .data = region, let steady = steadyEvents(op) {
            lastReadIsMetadata = false
            lastReadIsL2Table = false
            lastReadIsRefblock = false
            return steady
        }
        if case .l2Table = region, op.kind == .read, walkPathOpen { walkTableRead(op); return [] }
        lastReadIsMetadata = Self.isMetadata(region, op.kind)
        lastReadIsL2Table = { if op.kind == .read, case .l2Table = region { return true } else { return false } }()
        lastReadIsRefblock = { if op.kind == .read, case .refcountBlock = region { return true } else { return false } }()
        var events: [BlkdebugEvent] = []
        if !opened { events.append(.none); opened = true }
        if op.kind == .flush { flushRetriedAtClose = false }
        if metadataPreallocationCheck {
            // qcow2_detect_metadata_preallocation: file-posix's allocated size (an fstat),
            // then qcow2_get_refcount of every cluster from 0, refblock by refblock: reads
            // with no event, not an allocation's free-space search. (Over blkdebug QEMU
            // cannot ask the allocated size and skips the check: the reads never happen.)
            if op.kind == .read, case .refcountBlock = region { return events }
            metadataPreallocationCheck = false
        }
        let isWriteBack = op.kind == .write && {
            switch region { case .l2Table, .refcountBlock: return true; default: return false }
        }()
        if snapshot.isActive || (op.kind == .read && !shadow.snapshotL1Tables.isEmpty) {
            let out = snapshot.before(op, region, isWriteBack: isWriteBack, shadow: shadow, file: file)
            if out.flushStarted { flush.startInternal() }
            events += out.events
            if out.consumed { return events }
        }
        if bitmapStore != nil || (op.kind == .read && region == .unreferenced && writable) {
            if let e = bitmapStoreEvents(op, region, file: file) { return events + e }
        }
        if checkRepair == nil, writable, l1TableReads > 1, !snapshot.isActive, shadow.snapshotL1Tables.isEmpty {
            checkRepair = CheckRepair(repairsDirtyImage: dirtyAtOpen)
        }
        if !refcountOrderRewrite, op.kind == .write, op.length == shadow.clusterSize, region == .unreferenced,
           writable, l1TableReads <= 1, !pendingGuestWrite, let head = op.bytes?(0, 16), isRefblockOfOtherOrder(head),
           refcountsEndBeforeFileEnd(op, bits: refcountBitsOf(head), fileSize: max(file.size, op.end)) {
            // qcow2_change_refcount_order: every new refblock and the new table were
            // allocated (cluster_alloc + a refcount update each) before the first new
            // refblock is written; then the table, the old refblocks' write-back and a
            // flush, with no events.
            refcountOrderRewrite = true
            let newEntries = shadow.clusterSize * 8 / refcountBitsOf(head)
            let blocks = (max(file.size, op.end) / shadow.clusterSize + newEntries - 1) / newEntries
            for _ in 0..<(blocks + 1) { events += [.clusterAlloc, .refblockAlloc, .refblockLoad] }
            clusterAllocRaised = false
            return events + [.pwritev]
        }
        if refcountOrderRewrite, !(op.kind == .write && op.offset == 0) {
            switch op.kind {
            case .write:
                if case .refcountBlock = region { events.append(.refblockUpdatePart) }
                events.append(.pwritev)
            case .writeZeroes: events.append(.pwritevZero)
            default: break
            }
            return events
        }
        refcountOrderRewrite = false
        if refcountOrderFrees > 0, op.kind != .flush {
            let free: [BlkdebugEvent] = [.clusterFree, .refblockAlloc, .refblockLoad]
            let isRefblockRead: Bool = { if op.kind == .read, case .refcountBlock = region { return true } else { return false } }()
            // A refblock read is the first (or a retried) free's cache miss; anything
            // else comes after all of them.
            let n = isRefblockRead ? 1 : refcountOrderFrees
            for _ in 0..<n { events += free }
            refcountOrderFrees -= n
            if refcountOrderFrees == 0 { checkRepair = CheckRepair(phase: .fixed) }
            if isRefblockRead { return events }
        }
        if checkRepair != nil, op.kind == .read, case .refcountBlock = region { return events }
        if checkRepair != nil, op.kind != .read {
            let isRefblock: Bool = { if case .refcountBlock = region { return true } else { return false } }()
            let closing = checkRepair!.phase == .closing && !checkRepair!.repairsDirtyImage
            let repair = checkRepair!.events(op.kind, offset: op.offset, clusters: clusters(of: op).count,
                                             isRefblock: isRefblock)
            // Both flushes of the close's bdrv_flush are retried by qcow2_close: the
            // dependency flush (flush_to_os) and the file's flush after the write-back,
            // which qcow2_close's L2 cache flush repeats (the failed one left the file's
            // flush generation behind).
            flushRetriedAtClose = op.kind == .flush && (repair.contains(.flushToOS) || closing)
            events += repair
            if op.kind == .writeZeroes { events.append(.pwritevZero) }
            if checkRepair!.ended { checkRepair = nil; l1TableReads = 1; dirtyAtOpen = false }
            return events
        }
        if !(isWriteBack || op.kind == .flush) {
            if flush.isWritingBack { events += flush.interrupted() }
            resizeCacheFlush = false
        }
        if let dropped = shrinkDroppedTables, op.kind != .flush {
            events.append(.l1ShrinkFreeL2Clusters)
            for _ in 0..<dropped { events += [.clusterFree, .refblockAlloc, .refblockLoad] }
            shrinkDroppedTables = nil
        }
        switch sharedCow {
        case .oldTableFreePending where op.kind != .flush:
            events += [.clusterFree, .refblockAlloc, .refblockLoad]
            sharedCow = .none
            if op.kind == .read, case .data = region {
                // The COW read of the shared data cluster: the new cluster was allocated
                // first (one refcount block assumed); its write carries the COW.
                events += [.clusterAlloc, .refblockAlloc, .refblockLoad, .cowRead]
                sharedCow = .dataWritten
                cowWritePending = true
            } else if op.kind == .write {
                sharedCow = .dataWritten
                sharedCowClusters = clusters(of: op).count
            }
        case .dataWritten where op.kind == .write:
            sharedCowClusters = clusters(of: op).count
        case .l2Synced where op.kind == .write:
            if case .refcountBlock = region {
                sharedCow = .refcountsWritten
                events.append(.clusterFree)
                events.append(.refblockUpdatePart)
                events.append(.pwritev)
                return events
            }
            sharedCow = .none
        case .refcountsSynced where op.kind != .flush:
            // The first free's refcount update, then one free per other old cluster.
            for _ in 1..<max(1, sharedCowClusters) { events += [.refblockAlloc, .refblockLoad, .clusterFree] }
            events += [.refblockAlloc, .refblockLoad]
            sharedCow = .none
        default: break
        }
        switch compressedCowFree {
        case .dependencyWritten where op.kind != .flush:
            events += [.refblockAlloc, .refblockLoad]
            compressedCowFree = .none
        case .dataWritten:
            if case .refcountBlock = region, op.kind == .write {} else { compressedCowFree = .none }
        default: break
        }
        if oldTableFreePending && op.kind != .flush {
            events.append(.clusterFree)
            oldTableFreePending = false
            afterTableFree = true
            tableFreeWrittenBack = false
            if oldTableBlocks.isEmpty { events += [.refblockAlloc, .refblockLoad] }
        }
        if !oldTableBlocks.isEmpty, !oldTableFreePending, op.kind != .flush {
            // The free's update_refcount walks the old table's refcount blocks in order; a
            // read of one of them is its cache miss (the blocks before it were hits).
            if op.kind == .read, case .refcountBlock(_, let index) = region, let k = oldTableBlocks.firstIndex(of: index) {
                for _ in 0...k { events += [.refblockAlloc, .refblockLoad] }
                oldTableBlocks.removeFirst(k + 1)
                return events
            }
            for _ in oldTableBlocks { events += [.refblockAlloc, .refblockLoad] }
            oldTableBlocks = []
        }
        if refblockAlloc.growthUndoPending, op.kind != .flush, !oldTableFreePending, oldTableBlocks.isEmpty {
            // The free done: the growth's -EAGAIN (RefblockAllocation.tableSwitched).
            events += refblockAlloc.growthUndoEvents()
        }
        let freeEvictionSync = afterTableFree && op.kind == .flush && !tableFreeWrittenBack
        if afterTableFree && isWriteBack { tableFreeWrittenBack = true }
        if afterTableFree, !(op.kind == .read || isWriteBack || freeEvictionSync) { afterTableFree = false }
        if op.kind == .flush { allocationRefcountFlush = false }
        let undoSync = retryUndoSync && op.kind == .flush
        if op.kind != .flush { retryUndoSync = false }
        defer {
            // After classification: the write that consumes a pending new block counts too.
            switch (op.kind, region) {
            case (.flush, _): refblockAlloc.synced()
            case (.write, .refcountBlock), (.write, .refcountTable): break
            case (.write, _) where events.contains(.refblockUpdatePart): break  // a new refblock
            case (.write, .l2Table) where refblockAlloc.inL2CacheFlush: break
            // (A chunk before's data, its task running late, goes on beside them.)
            case (.write, _) where chunkOrder.writingAheadData: break
            // (A refcount table growth's table and switch: the allocation goes on.)
            case (.write, _) where events.contains(.refblockAllocWriteTable): refblockAlloc.otherWrite()
            case (.write, _) where events.contains(.refblockAllocSwitchTable):
                if !refblockAlloc.retryPending { refblockAlloc.otherWrite() }
            case (.write, _), (.writeZeroes, _), (.discard, _): refblockAlloc.otherWrite(); chunkOrder.otherWrite()
            default: break
            }
            let isOtherWrite: Bool = {
                switch (op.kind, region) {
                case (.write, .l1Table), (.write, .refcountBlock), (.write, .refcountTable), (.write, .data): return false
                case (.write, _), (.writeZeroes, _), (.discard, _): return true
                default: return false
                }
            }()
            let aheadWrite = chunkOrder.opEnded(otherWrite: isOtherWrite)
            previousWasL1Update = op.kind == .write && op.length <= 512 && { if case .l1Table = region { return true } else { return false } }()
            // (A chunk before's data whose allocation a write-back raised ahead does not end
            // it: the chunk whose L1 entry went out allocates its data next all the same.)
            if op.kind != .flush && !aheadWrite { l2AllocateJustEnded = previousWasL1Update }
            // (Data whose allocation a write-back raised ahead counts too: ChunkAllocationOrder.)
            previousWasAllocatingWrite = op.kind == .write && events.contains(.writeAio)
                && (events.contains(.refblockAlloc) || aheadWrite)
            previousWasL2Load = op.kind == .read && { if case .l2Table = region { return true } else { return false } }()
            if previousWasL2Load { lastL2Load = (op.offset, op.length) }
            previousWasHeaderRewrite = op.kind == .write && op.offset == 0 && op.length == shadow.clusterSize
            // (qcow2_downgrade's refcount lookups after its rewrite end it: its flush is its own.)
            headerRewriteThenReads = previousWasHeaderRewrite || (headerRewriteThenReads && op.kind == .read && {
                switch region { case .data, .l2Table: return true; default: return false }
            }())
            previousWasOwedSync = op.kind == .flush && (previousWasOwedSync || flush.lastSyncWasOwed)
            // Only a late data write comes between an allocation's refcount flush and its table.
            if op.kind != .flush && !events.contains(.writeAio) { flush.tableWaitEnded() }
            previousWasRefblockRead = op.kind == .read && { if case .refcountBlock = region { return true } else { return false } }()
            previousWasCompressedRead = op.kind == .read && region == .unreferenced && shadow.holdsCompressedData(op.offset)
        }

        if op.kind == .writeZeroes || op.kind == .discard {
            refblockAlloc.guestDirtiedL2(completedRequests: flush.completedRequests)
        }

        switch op.kind {
        case .read:
            // Assigned, not appended, when alone: the steady path's constant list
            // is then used as it is, with no allocation.
            let r = readEvents(op, region, file: file)
            if events.isEmpty { events = r } else { events += r }
        case .write:
            let w = writeEvents(op, region, file: file)
            if events.isEmpty && w.count == 1 && w[0] == .writeAio {
                // The steady path: a constant list, no appends.
                events = [.writeAio, .pwritev]
            } else {
                events += w
                events.append(.pwritev)
            }
            pendingGuestWrite = events.contains(.writeAio) || events.contains(.writeCompressed)
            pendingCompressedWrite = events.contains(.writeCompressed)
        case .writeZeroes:
            if case .l1Table(0) = region, op.length >= UInt64(shadow.l1.count) * 8, op.length % shadow.clusterSize == 0 {
                // make_completely_empty: the whole L1 table is zeroed.
                for i in 0..<shadow.l1.count { shadow.setL1(index: i, 0) }
                makeEmpty = .l1Zeroed
                events.append(.l1Update)
            } else if makeEmpty == .l1Zeroed && op.offset == shadow.clusterSize {
                makeEmpty = .prepared
                events.append(.emptyImagePrepare)
            } else if case .l1Table(let first) = region {
                // qemu-img resize --shrink: the dropped L1 entries are zeroed.
                let end = min(UInt64(shadow.l1.count), first + op.length / 8)
                shrinkDroppedTables = (first..<max(first, end)).filter { shadow.l1[Int($0)] & Qcow2Entry.offsetMask != 0 }.count
                for i in first..<max(first, end) { shadow.setL1(index: Int(i), 0) }
                events.append(.l1ShrinkWriteTable)
                shrinking = true
                flush.requestContinues()
            } else if case .unreferenced = region, shadow.isCovered(clusterOffset: op.offset) {
                events += allocationEvents(newClusters: clusters(of: op))
                events.append(.clusterAllocSpace)
                zeroedClusters.formUnion(clusters(of: op))
                writtenClusters.formUnion(clusters(of: op).map { $0 >> UInt64(shadow.header.clusterBits) })
            } else if case .data = region, writable, op.offset % shadow.clusterSize == 0, op.length % shadow.clusterSize == 0 {
                // A partial write into a preallocated zero cluster (iotest 066): QEMU keeps the
                // host cluster and zero-fills it first (handle_alloc_space). A guest
                // `write -z` on allocated clusters only sets zero flags in the L2 table, and
                // `-u` discards: neither zeroes data clusters in the file.
                events.append(.clusterAllocSpace)
            }
            events.append(.pwritevZero)
        case .flush:
            // l2_allocate's L2 cache flush ends with this sync (the L1 entry is next); when the
            // pending cluster was a late data write's, no L1 write comes to end it.
            l2AllocateFlush = false
            if headerFeaturesSync { headerFeaturesSync = false; break }
            if undoSync { retryUndoSync = false; break }
            // After an old table's free the refcount cache depends on the L2 cache: the
            // allocation's free-space search evicting a dirty block flushes that first, and
            // its bdrv_flush syncs when a chunk's data write finished since the last sync
            // (under load): no event, and no request's end.
            if freeEvictionSync { break }
            if makeEmpty == .truncated {
                // The close after make_completely_empty: retried by qcow2_close.
                makeEmpty = .none; events.append(.flushToOS); flushRetriedAtClose = true
            }
            if headerRewriteThenReads, flush.isIdle, makeEmpty == .none, !snapshot.isActive,
               !shadow.header.extensions.contains(where: { $0.type == Qcow2HeaderExtension.bitmaps }) {
                // qcow2_update_header (qemu-img amend, rebase -u) writes the header with no
                // flush of its own: a flush right after it (or after reads only: the rewrite at
                // open of qcow2_do_open, unknown autoclear bits) is the close's flush of the qcow2
                // node (flush_to_os; no write request, so no flush_to_disk), whose error
                // bdrv_close ignores and qcow2_close retries. (Marking stored bitmaps in use
                // at open flushes the file itself, with no event.)
                events.append(.flushToOS)
                flushRetriedAtClose = true
            }
            events += snapshot.sync()
            switch sharedCow {
            case .dataWritten: sharedCow = .l2Synced
            case .refcountsWritten: sharedCow = .refcountsSynced
            default:
                if !previousWasOwedSync {
                    let synced = flush.sync()
                    // In writeback mode, for a command whose only flush is the close's (qemu-img
                    // rebase), the full flush that reaches the disk is the close's: bdrv_close
                    // ignores its error and qcow2_close flushes again. (qemu-img commit's job
                    // flushes its target itself and reports the error.)
                    if flush.writeback && writebackFlushIsClose && synced.contains(.flushToDisk) { flushRetriedAtClose = true }
                    // The same for qemu-io's close after compressed writes (no flush of their own).
                    if flush.lastFlushFollowedCompressed && synced.contains(.flushToDisk) { flushRetriedAtClose = true }
                    events += synced
                }
            }
        case .discard:
            events += discardEvents(op, region)
        case .truncate:
            if makeEmpty == .allocated { makeEmpty = .truncated }
        case .allocate, .stat:
            break
        }
        return events
    }

    /// `eventsBefore` and then `recordsWalkReadBeforehand` of a read that the walk path
    /// (`walkTableRead`) classifies, in one call (for `ImageEngine.decide`): whether the
    /// table was recorded (its read then needs no after call). nil, having changed nothing,
    /// when the general path must run.
    mutating func walkTableReadRecorded(_ op: Operation, file: ImageReader) -> Bool? {
        // The flags first: in a process that may write (convert, bench) no lookup at all.
        guard op.kind == .read, walkPathOpen, shadow.isL2TableInPlace(at: op.offset) else { return nil }
        // (deferredWalkMatters reads only flags for a table: the region's offsets do not matter.)
        if !deferredWalk.isEmpty, deferredWalkMatters(op, .l2Table(tableOffset: op.offset, l1Index: 0)) { return nil }
        walkTableRead(op)
        // recordsWalkReadBeforehand, less what walkPathOpen checked (lastReadIsL2Table was
        // just set; defersWalk's flags but defersWalkLearning and makeEmpty).
        guard op.bytes != nil, defersWalkLearning, makeEmpty == .none, op.length == shadow.clusterSize,
              op.offset & (shadow.clusterSize - 1) == 0 else { return false }
        deferredWalk.record(table: op.offset, clusterBits: UInt64(shadow.header.clusterBits), fileSize: file.size)
        return true
    }

    /// The walk path, for a read of an L2 table after the L1 table was read again (a
    /// metadata walk: `qemu-img check` reads every table twice, ~20,000 reads at 20 GiB)
    /// by a process that cannot write the image, while nothing is pending: the general
    /// path's outcome (no events, see `readEvents`) and state changes, without its ~40
    /// checks of steps that only writes, flushes, snapshots or repairs start. False, having
    /// changed nothing, when the general path must decide.
    @inline(__always)  // (one call less on each of a check's table reads)
    private mutating func walkTableRead(_ op: Operation) {
        lastReadIsMetadata = true
        lastReadIsL2Table = true
        lastReadIsRefblock = false
        metadataPreallocationCheck = false
        resizeCacheFlush = false
        // eventsBefore's closing bookkeeping for a read of an L2 table.
        forgetPreviousRequest()
        previousWasL2Load = true
        lastL2Load = (op.offset, op.length)
    }

    /// Whether the walk path may take a read of an L2 table (`walkTableRead`): a read-only
    /// metadata walk with nothing pending. Flags only.
    @inline(__always)
    private var walkPathOpen: Bool {
        usesWalkPath && l1TableReads > 1 && opened && !writable && !snapshot.isActive && shadow.snapshotL1Tables.isEmpty
            && bitmapStore == nil && !refcountOrderRewrite && refcountOrderFrees == 0 && !flush.isWritingBack
            && shrinkDroppedTables == nil && sharedCow == .none && compressedCowFree == .none && !oldTableFreePending
            && oldTableBlocks.isEmpty
    }

    /// The fast paths' share of eventsBefore's closing bookkeeping: the request just
    /// classified was none of the kinds the next one looks back at.
    @inline(__always)
    private mutating func forgetPreviousRequest() {
        previousWasL1Update = false
        l2AllocateJustEnded = false
        retryUndoSync = false
        previousWasHeaderRewrite = false
        previousWasAllocatingWrite = false
        previousWasL2Load = false
        previousWasOwedSync = false
        previousWasRefblockRead = false
        previousWasCompressedRead = false
    }

    /// The steady path, for a request on guest data (`region(at: op.offset)` is data):
    /// a read, or a rewrite that stays in allocated clusters, while nothing is pending
    /// (no flush to end, no free owed). The same events and state changes as the general
    /// path below, without building lists: nil when that path must decide.
    private mutating func steadyEvents(_ op: Operation) -> [BlkdebugEvent]? {
        guard usesSteadyPath, opened, !flush.isWritingBack, shrinkDroppedTables == nil, !oldTableFreePending,
              sharedCow == .none, compressedCowFree == .none, oldTableBlocks.isEmpty, !afterTableFree,
              !snapshot.isActive, shadow.snapshotL1Tables.isEmpty else { return nil }
        switch op.kind {
        case .read:
            resizeCacheFlush = false
            forgetPreviousRequest()
            return [.readAio]
        // (Right after a free-space search the general path checks for a corrupt image's
        // reused cluster: writeEvents' .data case.)
        case .write where !(contiguousAllocation && previousWasRefblockRead)
                          && (op.length <= shadow.clusterSize - (op.offset & (shadow.clusterSize - 1))
                              || !runsIntoUnreferenced(op, firstIsData: true)):
            // (A write inside its first cluster runs into no other: no lookup.)
            resizeCacheFlush = false
            forgetPreviousRequest()
            headerRewriteThenReads = false
            pendingGuestWrite = true
            return [.writeAio, .pwritev]
        default:
            return nil
        }
    }

    /// `steadyKinds` is (false, false) at its first test: the last request was a table read.
    @inline(__always)
    var steadyShutByTableRead: Bool { previousWasL2Load || previousWasRefblockRead }

    /// Which requests on guest data `steadyEvents` takes and that change nothing here,
    /// before or after (the flags it clears are clear, a write's flush is already
    /// pending and dirties nothing, a failed write has no COW to give up): skipping
    /// such a request leaves the classifier exactly as classifying it would.
    @inline(__always)  // (called, it would copy the whole classifier first: ~720 bytes)
    var steadyKinds: (reads: Bool, writes: Bool) {
        // First, on its own: after a table read (every request of a metadata walk) nothing
        // else needs looking at (the publication after each of `qemu-img check`'s reads).
        if previousWasL2Load || previousWasRefblockRead { return (false, false) }
        guard usesSteadyPath, opened, !flush.isWritingBack, shrinkDroppedTables == nil, !oldTableFreePending,
              sharedCow == .none, compressedCowFree == .none, oldTableBlocks.isEmpty, !afterTableFree,
              !snapshot.isActive, shadow.snapshotL1Tables.isEmpty,
              !resizeCacheFlush, !previousWasL1Update, !previousWasAllocatingWrite, !previousWasL2Load, !previousWasRefblockRead,
              !previousWasCompressedRead, !previousWasOwedSync, !l2AllocateJustEnded, !previousWasHeaderRewrite, !retryUndoSync else { return (false, false) }
        // (A write clears headerRewriteThenReads, a read keeps it.)
        return (true, !headerRewriteThenReads && pendingGuestWrite && !requestAllocated && !cowWritePending && flush.isRequestDone
                      && shadow.zeroFlagClusters.count == 0)
    }

    /// Freed clusters are discarded (qemu-io opens with discard=unmap): each one was
    /// freed with its own qcow2_free_clusters, i.e. cluster_free and a refcount update.
    private mutating func discardEvents(_ op: Operation, _ region: Region) -> [BlkdebugEvent] {
        guard case .data = region else { return [] }
        var events: [BlkdebugEvent] = []
        for c in clusters(of: op) where shadow.region(at: c) == .data {
            if freesRaisedAhead > 0 { freesRaisedAhead -= 1 } else { events += [.clusterFree, .refblockAlloc, .refblockLoad] }
            shadow.forgetData(clusterOffset: c)
        }
        freesRaisedAhead = 0
        clusterAllocRaised = false
        contiguousAllocation = false
        return events
    }

    public mutating func eventsAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        // The region, when looked up here already and still valid (it hashes).
        var looked: Region?
        if !deferredWalk.isEmpty {
            let region = shadow.regionInPlace(at: op.offset)
            if deferredWalkMatters(op, region) { materializeDeferredWalk(file: file) } else { looked = region }
        }
        if !(performed && succeeded) {
            // QEMU gives the operation up: none of its later steps follow.
            if snapshot.isActive { snapshot.abandon() }
            sharedCow = .none
            cowWritePending = false
            compressedCowFree = .none
        } else if op.kind == .write, case .data = shadow.regionInPlace(at: op.offset) {
            // The steady path: guest data written, nothing to learn (as below, without
            // the metadata checks and the empty learn).
            if pendingGuestWrite {
                // A write into a preallocated zero cluster clears the entry's zero flag in
                // QEMU's L2 cache (qcow2_alloc_cluster_link_l2): L2 dirty, depending on the
                // refcount cache, with no allocation.
                // (Only when a flag is known: it costs a call.)
                let zeroAlloc = shadow.zeroFlagClusters.count != 0
                    && shadow.clearZeroFlags(offset: op.offset, length: op.length)
                flush.requestFinished(dirtiedL2: requestAllocated || zeroAlloc, dirtiedRefcounts: requestAllocated,
                                      l2DependsOnRefcounts: zeroAlloc)
                requestAllocated = false
            }
            return [.pwritevDone]
        }
        if performed && succeeded {
            switch op.kind {
            case .write, .read:
                // One lookup: the region decides both whether and how to learn.
                var region = Region.data
                if op.bytes != nil { region = looked ?? shadow.regionInPlace(at: op.offset) }
                if op.bytes != nil, Self.isMetadata(region, op.kind), shadow.learnsFrom(region, offset: op.offset, length: op.length) {
                    // In place from the call's buffer when it has one (an L2 table read: no copies).
                    var l2Read = false
                    if op.kind == .read, case .l2Table = region { l2Read = true }
                    if l2Read, defersWalk(op) {
                        deferredWalk.record(table: op.offset, clusterBits: UInt64(shadow.header.clusterBits), fileSize: file.size)
                        return []
                    }
                    if l2Read { deferredWalk.lastTable = nil }
                    op.withBytes(count: Int(op.length)) { data in
                        if l2Read { lastLoadedSliceHasBoundary = shadow.learnL2Read(offset: op.offset, region: region, data: data, file: file) }
                        else { shadow.learn(offset: op.offset, data: data, file: file) }
                    }
                } else if op.kind == .write {
                    shadow.learn(offset: op.offset, data: [], file: file)
                }
                if op.kind == .write, pendingGuestWrite {
                    flush.requestFinished(dirtiedL2: requestAllocated, dirtiedRefcounts: requestAllocated,
                                          compressed: pendingCompressedWrite)
                    requestAllocated = false
                }
            case .discard:
                // Freed clusters: L2 entries and refcounts are dirty.
                if !shrinking && bitmapStore == nil { flush.requestFinished(dirtiedL2: true, dirtiedRefcounts: true) }
            case .writeZeroes:
                // Zeroed L1 entries (a shrink) are flushed by qcow2 itself, not a full flush.
                if case .l1Table = shadow.region(at: op.offset) { break }
                if makeEmpty != .none { break }  // qcow2's own, not a guest request
                flush.requestFinished(dirtiedL2: true, dirtiedRefcounts: requestAllocated)
            default: break
            }
        }
        return op.kind == .write || op.kind == .writeZeroes ? [.pwritevDone] : []
    }

    // MARK: Bitmaps stored at close

    /// The events of `op` while bitmaps are stored at close, starting it at the second read
    /// of the bitmap directory; nil when it is not (or no longer) under way.
    private mutating func bitmapStoreEvents(_ op: Operation, _ region: Region, file: ImageReader) -> [BlkdebugEvent]? {
        var prefix: [BlkdebugEvent] = []
        if bitmapStore == nil {
            guard shadow.header.extensions.contains(where: { $0.type == Qcow2HeaderExtension.bitmaps }),
                  let dir = shadow.bitmapDirectory(file: file), op.offset == dir.lowerBound else { return nil }
            bitmapDirectoryReads += 1
            guard bitmapDirectoryReads > 1 else { return nil }
            // The close's flush of the qcow2 node, with nothing to write back.
            if flush.isWritingBack { prefix += flush.interrupted() }
            prefix += flush.flushToDiskNext ? [.flushToOS, .flushToDisk] : [.flushToOS]
            bitmapStore = BitmapStore()
            pendingGuestWrite = false
            return prefix
        }
        var blocks = 0, tableData = 0
        if op.kind == .write, region == .unreferenced {
            var seen: [UInt64] = []
            for c in clusters(of: op) where !seen.contains(shadow.reftableIndex(clusterOffset: c)) { seen.append(shadow.reftableIndex(clusterOffset: c)) }
            blocks = seen.count
            writtenClusters.formUnion(clusters(of: op).map { $0 >> UInt64(shadow.header.clusterBits) })
        }
        if op.kind == .read, region == .unreferenced, op.length % 8 == 0, op.length <= 1 << 20,
           let table = file.read(offset: op.offset, count: Int(op.length)) {
            for k in 0..<(table.count / 8) where table.be64(at: k * 8) & Qcow2Entry.offsetMask != 0 { tableData += 1 }
        }
        let isHeaderRewrite = op.kind == .write && op.offset == 0 && op.length == shadow.clusterSize
        let events = bitmapStore!.events(op.kind, region: region, isHeaderRewrite: isHeaderRewrite,
                                         newBlocks: blocks, tableDataClusters: tableData)
        pendingGuestWrite = false
        if bitmapStore!.done { bitmapStore = nil }
        return events
    }

    // MARK: Reads

    private mutating func readEvents(_ op: Operation, _ region: Region, file: ImageReader) -> [BlkdebugEvent] {
        switch region {
        case .refcountTable where op.length >= shadow.header.refcountTableSize:
            return [.reftableLoad]
        case .l1Table(let first) where first == 0 && op.length >= UInt64(shadow.l1.count) * 8:
            l1TableReads += 1
            return []
        case .l2Table(_, let l1Index):
            if l1TableReads > 1 { return [] }
            // l2_allocate copying a table shared with a snapshot (its L1 entry lacks
            // the COPIED flag): the new table's refcount went out, now the old one is read.
            if !pendingTables.isEmpty, Int(l1Index) < shadow.l1.count,
               shadow.l1[Int(l1Index)] & Qcow2Entry.copied == 0 {
                sharedCow = .tableCopied
                return [.l2AllocCowRead, .l2Load]
            }
            return [.l2Load]
        case .refcountBlock:
            // A refcount cache miss: the free-cluster search of a new allocation,
            // or the free check of an allocation that extends a host run.
            if previousWasL2Load, let table = deferredWalk.lastTable {
                // Read-only (deferredWalkMatters): both ways below end in [], and only
                // contiguousAllocation differs, settled when the walk is learnt.
                deferredWalk.noteRefblockReadAfter(table: table, clusterBits: UInt64(shadow.header.clusterBits))
                return []
            }
            if shrinkCommand, previousWasL2Load, writable, !shrinking {
                // qemu-img resize --shrink starts with qcow2_cluster_discard past the new
                // end: the first freed cluster's refcount update misses the cache. (In a
                // qemu-io process the same read could be a write extending a host run.)
                freesRaisedAhead += 1
                return [.clusterFree, .refblockAlloc, .refblockLoad]
            }
            if previousWasL2Load && lastLoadedSliceHasBoundary && hostRunCanGrow(file: file) {
                contiguousAllocation = true
                return []
            }
            if previousWasHeaderRewrite, l1TableReads <= 1 {
                // qemu-img amend -o compat=0.10: qcow2_downgrade rewrites the header, then
                // expand_zero_clusters_in_l1 asks each L2 table's refcount (qcow2_get_refcount,
                // no event) before loading it. No allocation starts right after a header
                // rewrite: qcow2_update_header is the last step of the others.
                return []
            }
            if makeEmpty == .refblockHooked {
                // make_completely_empty's qcow2_alloc_clusters (the refcount cache was emptied).
                clusterAllocRaised = true
                return [.clusterAlloc]
            }
            if writable { flush.requestContinues() }
            // The free-space search of a retry after a refcount table growth.
            if refblockAlloc.inGrowthRetry { return [] }
            // A metadata walk (qemu-img check) reads refblocks without allocating.
            if writable && !clusterAllocRaised && l1TableReads <= 1 {
                clusterAllocRaised = true
                return [.clusterAlloc]
            }
            return []
        case .data:
            return [.readAio]
        case .unreferenced where shadow.holdsCompressedData(op.offset):
            return [.readCompressed]
        default:
            return []
        }
    }

    // MARK: Writes

    /// alloc_refcount_block's 8-byte refcount-table entry write. Under O_DIRECT (`-t none`)
    /// file-posix pads it to the file's request alignment with a read-modify-write below
    /// blkdebug: a sector-aligned write of up to 4 KiB that changes exactly one entry.
    /// The refcount table entry a write hooks a new refblock into: an 8-byte entry write,
    /// or (O_DIRECT: file-posix pads it to the sector) a sector-aligned write of up to 4 KiB
    /// that changes exactly one entry. nil for any other write into the table.
    private func refcountTableHookupIndex(_ op: Operation) -> UInt64? {
        let tableOffset = shadow.header.refcountTableOffset
        guard op.offset >= tableOffset else { return nil }
        if op.length == 8 { return (op.offset - tableOffset) / 8 }
        let n = Int(op.length)
        guard op.length % 512 == 0, n <= 4096, op.offset % 512 == 0,
              let b = op.bytes?(0, n), b.count == n else { return nil }
        let first = Int((op.offset - tableOffset) / 8)
        var changed: [Int] = []
        for i in 0..<(n / 8) {
            let old = first + i < shadow.reftable.count ? shadow.reftable[first + i] : 0
            if b.be64(at: i * 8) != old { changed.append(first + i) }
        }
        return changed.count == 1 ? UInt64(changed[0]) : nil
    }

    private mutating func writeEvents(_ op: Operation, _ region: Region, file: ImageReader) -> [BlkdebugEvent] {
        switch region {
        case .header:
            if op.offset == 0, op.length >= 100, let b = op.bytes?(96, 4), b.count == 4,
               b.be32(at: 0) != shadow.header.refcountOrder, b.be32(at: 0) <= 6 {
                // qcow2_change_refcount_order's header switch to the new refcount
                // structures; the old table and each old refblock are freed next.
                refcountOrderFrees = shadow.reftable.filter { $0 != 0 }.count + 1
                return []
            }
            if op.offset == 72 && op.length == 8 {
                // qcow2_mark_dirty (lazy_refcounts' first write) or qcow2_mark_corrupt:
                // bdrv_pwrite_sync on the file, whose flush is no request's flush.
                headerFeaturesSync = true
                if let b = op.bytes?(7, 1), b.count == 1 { flush.refcountsDeferred = b[0] & 1 != 0 }
                return []
            }
            if op.offset == 0, op.length >= 80, let b = op.bytes?(79, 1), b.count == 1 {
                flush.refcountsDeferred = b[0] & 1 != 0  // qcow2_update_header (mark clean)
            }
            if op.offset == 24 && op.length == 8 { shrinking = false; resizeCacheFlush = true }
            if op.offset == 36 && op.length == 12 {
                oldTableFreePending = true
                noteOldTable(offset: shadow.header.l1TableOffset, bytes: UInt64(shadow.header.l1Size) * 8)
                return [.l1GrowActivateTable]
            }
            if op.offset == 40 && op.length == 20 && makeEmpty == .prepared {
                makeEmpty = .headerSwitched
                return [.l1Update, .reftableUpdate]
            }
            if op.offset == 60 && op.length == 12 {
                let count = (op.bytes?(0, 4)).map { $0.count == 4 ? $0.be32(at: 0) : 1 } ?? 1
                return snapshot.snapshotHeaderWrite(newCount: count, shadow: shadow)
            }
            if op.offset == 48 && op.length == 12 {
                growth = .none
                refblockAlloc.tableSwitched()
                oldTableFreePending = true
                noteOldTable(offset: shadow.header.refcountTableOffset,
                             bytes: UInt64(shadow.header.refcountTableClusters) * shadow.clusterSize)
                return [.refblockAllocSwitchTable]
            }
            return []
        case .l1Table:
            // qcow2_write_l1_entry writes one entry (at most a 512-byte sector); a
            // rewrite of the whole table (snapshot refcount update, snapshot apply)
            // raises no event.
            let covers = op.length >= UInt64(shadow.l1.count) * 8
            if covers && (op.length > 512 || (op.offset == shadow.header.l1TableOffset && snapshot.walked
                                              && pendingTables.isEmpty && !l2AllocateFlush)) {
                snapshot.activeL1Rewritten(shadow: shadow, file: file)
                return []
            }
            flush.allocationWrite()
            l2AllocateFlush = false
            if sharedCow == .tableCopied { sharedCow = .oldTableFreePending }
            let entry = op.length == 8 ? op.bytes?(0, 8) : nil
            chunkOrder.tableLinked(table: entry.flatMap { $0.count == 8 ? ($0.be64(at: 0) & Qcow2Entry.offsetMask) >> UInt64(shadow.header.clusterBits) : nil })
            return [.l1Update]
        case .refcountTable:
            if makeEmpty == .headerSwitched && op.length == 8 {
                makeEmpty = .refblockHooked
                return [.refblockAlloc]
            }
            guard let index = refcountTableHookupIndex(op) else { return [] }
            refblockAlloc.hookedUp(reftableIndex: index)
            flush.allocationWrite()  // bdrv_pwrite_sync: its own fdatasync follows
            return [.refblockAllocHookup]
        case .l2Table:
            // alloc_refcount_block's L2 cache flush: the allocation's clusters whose
            // refcounts its dependency wrote are data, not a new table of l2_allocate's.
            if refblockAlloc.inL2CacheFlush { flush.allocationWrite(); return [.l2Update] }
            // A write-back of a known table outside an allocation belongs to a full
            // flush (write -z that only sets zero flags reaches the file only here).
            // l2_allocate flushes the L2 cache after the new table's refcount went out
            // (pendingTables): other dirty tables are written back there, not in a full flush.
            // (l2_allocate's own fdatasync follows: owed, even if an earlier chunk's data
            // write finishes in between, its worker thread running late.)
            if !pendingTables.isEmpty && !l2AllocateFlush {
                l2AllocateFlush = true
                flush.allocationWrite()
                return l2AllocWrites + [.l2Update]
            }
            if !pendingTables.isEmpty || l2AllocateFlush { flush.allocationWrite(); return [.l2Update] }
            if resizeCacheFlush { return [.l2Update] }
            if previousWasAllocatingWrite && !isCovered(fileEnd: file.size) && chunkOrder.crossesAtStart() {
                // The same after the data of the chunk before, whose allocation was raised
                // ahead: the pending chunk's data allocation starts right at the new block
                // (its cluster_alloc is raised here; it is retried after the hookup).
                flush.allocationWrite()
                refblockAlloc.announce()
                return (clusterAllocRaised ? [] : [.clusterAlloc]) + [.refblockAlloc, .l2Update]
            }
            if previousWasAllocatingWrite && !isCovered(fileEnd: file.size) {
                // Right after a chunk's data write, the next chunk's allocation needs a new
                // refcount block: alloc_refcount_block flushes the L2 cache first (refgrow;
                // its cluster_alloc came before the data write), not a full flush; its
                // fdatasync follows.
                flush.allocationWrite()
                refblockAlloc.announce()
                return [.refblockAlloc, .l2Update]
            }
            if previousWasL1Update && !isCovered(fileEnd: file.size) {
                // The next table's allocation needs a new refcount block (the file ends
                // where no refblock covers it): alloc_refcount_block flushes the L2
                // cache first (qemu-img convert; in qemu-io a full flush would come
                // after the request's data write instead).
                clusterAllocRaised = true
                refblockAlloc.announce()
                return [.clusterAlloc, .refblockAlloc, .l2Update]
            }
            return flush.writeBack(l2: true) + [.l2Update]
        case .refcountBlock(let block, let reftableIndex):
            if compressedCowFree == .dataWritten {
                // qcow2_free_any_cluster of the replaced compressed cluster: update_refcount
                // makes the refcount cache depend on the L2 cache, which depends on the
                // refcount cache (the allocation): that dependency is flushed first, this
                // write and its own fdatasync, not a full flush.
                compressedCowFree = .dependencyWritten
                flush.allocationWrite()
                return [.clusterFree, .refblockUpdatePart]
            }
            if makeEmpty == .refblockHooked {
                // The refcounts of the header, tables and refblock, written back by mark-clean.
                makeEmpty = .allocated
                let alloc: [BlkdebugEvent] = clusterAllocRaised ? [] : [.clusterAlloc]
                clusterAllocRaised = false
                return alloc + [.refblockAlloc, .refblockLoad, .refblockUpdatePart]
            }
            let newly = shadow.newlyReferencedClusters(block: block, newContent: op.bytes?(0, Int(op.length)) ?? [], file: file)
            let allocated = newly.filter { !writtenClusters.contains($0) }
            if refblockAlloc.inGrowthRetry && allocated.isEmpty {
                // The retry's free-space search evicting a dirty block (the undo's, the free's).
                flush.requestContinues()
                return [.refblockUpdatePart]
            }
            if allocationRefcountFlush || (afterTableFree && allocated.isEmpty) {
                // The allocation after an old table's free: its refcount cache flush writes
                // the blocks the free dirtied too, whichever comes first (no full flush).
                var events: [BlkdebugEvent] = []
                if !allocationRefcountFlush {
                    if !clusterAllocRaised && !contiguousAllocation { events.append(.clusterAlloc) }
                    events += [.refblockAlloc, .refblockLoad]
                    allocationRefcountFlush = true
                    afterTableFree = false
                    clusterAllocRaised = false
                    contiguousAllocation = false
                }
                pendingTables.formUnion(allocated)
                flush.allocationWrite(tableFollows: true)
                return events + [.refblockUpdatePart]
            }
            afterTableFree = false
            let retry = refblockAlloc.retryEvents(reftableIndex: reftableIndex)
            // A retried data allocation's first write-back before its data: the next
            // allocation's flush (chunk k+1's l2_allocate), whose events follow the retry's.
            let retryThenNext = chunkOrder.retryWrittenBack(retry: retry, allocated: allocated)
            if retry == nil, chunkOrder.allRaisedAhead(allocated) {
                // The earlier block of a data run raised ahead at the later block's write-back
                // (the run crossed into a block that exists): the same flush.
                pendingTables.formUnion(allocated)
                flush.allocationWrite(tableFollows: true)
                return [.refblockUpdatePart]
            }
            if !allocated.isEmpty {
                // The refcount cache flush of an allocation (l2_allocate, L1 growth):
                // it sets refcounts of clusters nothing has written yet, the new table.
                pendingTables.formUnion(allocated)
                flush.allocationWrite(tableFollows: true)
                let entries = shadow.header.refblockEntries, last = (reftableIndex + 1) * entries - 1
                let nextCovered = shadow.isCovered(clusterOffset: (last + 1) << UInt64(shadow.header.clusterBits))
                var events: [BlkdebugEvent] = retry ?? []
                let ahead = retry == nil ? chunkOrder.dataAhead(
                    allocated: allocated, reachesEnd: newly.last == last, nextCovered: nextCovered,
                    maxDataClusters: Int(shadow.l2SliceSize / shadow.header.l2EntrySize),
                    blockFirst: reftableIndex * entries, entries: entries) : nil
                let dataAhead = ahead != nil
                let tableCrosses = ahead?.nextCrosses ?? false
                if let ahead {
                    // The chunk before's data allocation, its data not written yet: its
                    // events come first (a read raised its cluster_alloc already, if any).
                    if !clusterAllocRaised { events.append(.clusterAlloc) }
                    for _ in 0..<ahead.blocks { events += [.refblockAlloc, .refblockLoad] }
                    clusterAllocRaised = false
                }
                if retry == nil || retryThenNext {
                    if !clusterAllocRaised && !contiguousAllocation { events.append(.clusterAlloc) }
                    // (A table crossing to a block not there yet: alloc_refcount_block's
                    // refblock_alloc below, and its retry, stand for its update.)
                    if !tableCrosses { events += [.refblockAlloc, .refblockLoad] }
                }
                // (A retry's events already count its update of this block: qemu-img
                // convert's next table, placed in the block just hooked up.)
                // One new cluster, the block's last: an L2 table (l2_allocate's own flush,
                // which ends there), unless a data allocation follows the table whose L1
                // entry just went out: that one runs on into the next block (it is flushed
                // before its data only because it crosses). Tables back to back: a table.
                // (The same for a table right after a chunk's data raised ahead.)
                let endsThere = !tableCrosses && (newly.count == 1 && (!l2AllocateJustEnded || tablesBackToBack) || dataAhead)
                // (A write-back that raised a chunk's data ahead is not a table's alone.)
                tablesBackToBack = l2AllocateJustEnded && !dataAhead
                switch refblockAlloc.startsNewBlockFlush(
                    reftableIndex: reftableIndex, reachesEnd: newly.last == last && !endsThere,
                    nextCovered: nextCovered,
                    completedRequests: flush.completedRequests, startsInNext: tableCrosses) {
                case .refcountCache:
                    // alloc_refcount_block for the next block: its flush writes this one first.
                    events += [.refblockAlloc, .refblockAllocWrite]
                case .l2Cache:
                    // Its L2 cache flush comes first, and writes this block as its dependency.
                    events.append(.refblockAlloc)
                case .none:
                    break
                }
                // qcow2_write_snapshots flushes the whole node after allocating the table.
                if snapshot.snapshotTableAllocated() { events.append(.flushToOS) }
                events.append(.refblockUpdatePart)
                clusterAllocRaised = false
                contiguousAllocation = false
                return events
            }
            if let retry {
                // The retried allocation's write-back (after a hookup), not a full flush's.
                flush.allocationWrite()
                if retryThenNext {
                    let next: [BlkdebugEvent] = clusterAllocRaised || contiguousAllocation ? [] : [.clusterAlloc]
                    clusterAllocRaised = false
                    return retry + next + [.refblockAlloc, .refblockLoad, .refblockUpdatePart]
                }
                return retry + [.refblockUpdatePart]
            }
            if resizeCacheFlush { return [.refblockUpdatePart] }
            if flush.refcountsDeferred, flush.isIdle { return flush.deferredRefcountsClose() + [.refblockUpdatePart] }
            return flush.writeBack(l2: false) + [.refblockUpdatePart]
        case .data:
            if contiguousAllocation, previousWasRefblockRead,
               shadow.refcount(clusterOffset: shadow.clusterStart(op.offset), file: file) == 0 {
                // A corrupt image: an L2 entry references the cluster but its refcount
                // is 0, so the allocation whose free-space search just ran handed it
                // out again. New data, as in a free cluster.
                contiguousAllocation = false
                let touched = clusters(of: op)
                writtenClusters.formUnion(touched.map { $0 >> UInt64(shadow.header.clusterBits) })
                return allocationEvents(newClusters: touched) + [.writeAio]
            }
            // Existing data (the steady path: checked without building arrays); a
            // write that runs on into new clusters extends the host run.
            if !runsIntoUnreferenced(op) { return [.writeAio] }
            let fresh = clusters(of: op).filter { shadow.region(at: $0) == .unreferenced }
            writtenClusters.formUnion(fresh.map { $0 >> UInt64(shadow.header.clusterBits) })
            var events: [BlkdebugEvent] = []
            if !fresh.isEmpty {
                contiguousAllocation = true
                events += allocationEvents(newClusters: fresh)
            }
            return events + [.writeAio]
        case .unreferenced:
            return unreferencedWriteEvents(op, file: file)
        }
    }

    private mutating func unreferencedWriteEvents(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        let first = shadow.clusterStart(op.offset)
        let head = op.bytes?(0, min(Int(op.length), 64)) ?? []
        if let dir = shadow.bitmapDirectory(file: file), dir.contains(op.offset) {
            // The bitmap directory rewritten in place (bitmaps marked in use at open):
            // a short unaligned write like compressed data, but metadata with no event.
            return []
        }
        if !shadow.isCovered(clusterOffset: first) {
            // Self-describing refcount structures: a new refblock, or the blocks
            // and table of a grown refcount table. Each is synced at once (a refcount
            // cache flush, bdrv_pwrite_sync): a data write finishing before that sync
            // (its worker thread late) does not end the request.
            flush.allocationWrite()
            if looksLikeTableCopy(head, of: shadow.reftable, allowZero: false) { return [.refblockAllocWriteTable] }
            let tableFull = shadow.reftableIndex(clusterOffset: first) >= UInt64(shadow.reftable.count)
            switch growth {
            case .none:
                if tableFull { growth = .blockWritten; refblockAlloc.tableGrowthStarted() }
                let written = refblockAlloc.newBlockWritten()
                guard written.raisesWrite else { return [.refblockUpdatePart] }
                var events: [BlkdebugEvent] = []
                if written.unannounced {
                    // Nothing was dirty (an allocation right after an L2 table that ended
                    // exactly at the block's end): this write is the allocation's first I/O.
                    // With a chunk's data allocation pending (the L2 cache clean, the chunk
                    // before's data in flight), that one, after its update of the blocks
                    // before (ChunkAllocationOrder.newBlockFirst).
                    let index = shadow.reftableIndex(clusterOffset: first)
                    if let run = chunkOrder.newBlockFirst(block: index, entries: shadow.header.refblockEntries,
                                                          maxDataClusters: Int(shadow.l2SliceSize / shadow.header.l2EntrySize)) {
                        if !clusterAllocRaised && !contiguousAllocation { events.append(.clusterAlloc) }
                        for _ in 0..<run.blocks { events += [.refblockAlloc, .refblockLoad] }
                        clusterAllocRaised = false
                        contiguousAllocation = false
                        refblockAlloc.awaitsNewBlock(reftableIndex: index, startsInNext: run.blocks == 0 || run.tableCrosses)
                        // (The next table's cluster_alloc: it is the one that crosses.)
                        if run.tableCrosses { events.append(.clusterAlloc) }
                        events.append(.refblockAlloc)
                        // (The allocation after the retry raises its own cluster_alloc.)
                        clusterAllocRaised = run.tableCrosses
                    } else {
                        if !clusterAllocRaised && !contiguousAllocation { events.append(.clusterAlloc) }
                        events.append(.refblockAlloc)
                        clusterAllocRaised = true
                    }
                }
                return events + [.refblockAllocWrite, .refblockUpdatePart]
            case .blockWritten:
                growth = .area
                return [.reftableGrow, .refblockAllocWriteBlocks, .refblockUpdatePart]
            case .area:
                return [.refblockUpdatePart]
            }
        }
        let touched = clusters(of: op)
        defer { writtenClusters.formUnion(touched.map { $0 >> UInt64(shadow.header.clusterBits) }) }
        // Clusters whose refcounts a write-back already set: data of an allocation before it.
        let refcountsWritten = pendingTables.count >= touched.count
            && touched.allSatisfy { pendingTables.contains($0 >> UInt64(shadow.header.clusterBits)) }
        if pendingTables.contains(first >> UInt64(shadow.header.clusterBits)) {
            // A table whose refcount reached the disk before it: L1 growth or a new L2 table.
            for c in touched { pendingTables.remove(c >> UInt64(shadow.header.clusterBits)) }
            if isL1GrowthLength(op.length) && (head.isEmpty || looksLikeTableCopy(head, of: shadow.l1, allowZero: true))
                || (op.length > UInt64(shadow.l1.count) * 8 && op.length % 8 == 0 && looksLikeTableCopy(head, of: shadow.l1, allowZero: false)) {
                // Growth by 1.5 (a write beyond the table), or to an exact size (qemu-img resize).
                return [.l1GrowWriteTable]
            }
            if refblockAlloc.awaitsBlock, op.length == shadow.clusterSize,
               let b = op.bytes?(0, Int(op.length)), b.count == Int(op.length), b.allSatisfy({ $0 == 0 }) {
                // A new refcount block placed in a block that exists (RefblockAllocation).
                refblockAlloc.awaitedBlockWritten()
                flush.allocationWrite()
                return [.refblockAllocWrite, .refblockUpdatePart]
            }
            if op.length == shadow.l2SliceSize, newL2Tables.insert(first).inserted {
                flush.allocationWrite()
                if l2AllocateFlush { return [.l2Update] }
                l2AllocateFlush = true
                return l2AllocWrites + [.l2Update]
            }
            if op.length % 512 != 0 || op.offset % 512 != 0 {
                // Another table written in pieces (the snapshot table): no event of its own.
                otherTables.formUnion(touched)
                snapshot.snapshotTableWritten()
                return []
            }
        } else if newL2Tables.contains(first) {
            return [.l2Update]
        } else if otherTables.contains(first) {
            snapshot.snapshotTableWritten()
            return []
        }
        // A snapshot's L1 table rewritten with its COPIED flags (snapshot -a): no event.
        if let n = shadow.snapshotL1Tables[op.offset], UInt64(n) * 8 == op.length { return [] }
        if op.length == UInt64(shadow.l1.count) * 8, looksLikeTableCopy(head, of: shadow.l1, allowZero: false) {
            // A copy of the active L1 table (qcow2_snapshot_create): allocated like
            // any cluster run, written with no event of its own; the refcount walk
            // over the active table follows.
            snapshot.activeL1Copied(shadow: shadow, file: file)
            return allocationEvents(newClusters: touched)
        }
        if isCompressedWrite(op, first: first) { return compressedWriteEvents(touched) }
        // New guest data: its refcount is still in QEMU's cache. A write that extends
        // a host run starts in the allocated cluster; one that starts here did not.
        contiguousAllocation = false
        if cowWritePending {
            cowWritePending = false
            requestAllocated = true
            clusterAllocRaised = false
            for c in touched { zeroedClusters.remove(c) }
            return [.writeAio, .cowWrite]
        }
        if previousWasCompressedRead {
            // Copy-on-write over a compressed cluster: the COW region and the guest
            // data go out as one write (perform_cow: write_aio, then cow_write).
            compressedCowFree = .dataWritten
            return allocationEvents(newClusters: touched.filter { !zeroedClusters.contains($0) }) + [.writeAio, .cowWrite]
        }
        // (Clusters whose allocation a write-back raised ahead are no longer new: ChunkAllocationOrder.)
        let bits = UInt64(shadow.header.clusterBits)
        let fresh = touched.filter { !zeroedClusters.contains($0) && !chunkOrder.raisedAhead($0 >> bits) }
        if touched.contains(where: { chunkOrder.raisedAhead($0 >> bits) }) {
            requestAllocated = true
            chunkOrder.dataWritten(touched.map { $0 >> bits }, fresh: fresh.count)
        } else if refcountsWritten {
            chunkOrder.lateDataWritten()
        }
        var events: [BlkdebugEvent] = []
        if !fresh.isEmpty, refblockAlloc.retryPending,
           let retry = refblockAlloc.retryEvents(reftableIndex: shadow.reftableIndex(clusterOffset: first)) {
            // The data of an allocation retried after a hookup, with no write-back before
            // it: the retry's undo and updates (no second cluster_alloc).
            requestAllocated = true
            clusterAllocRaised = false
            contiguousAllocation = false
            retryUndoSync = retry.count > 2
            events = retry
        } else if !fresh.isEmpty {
            events += allocationEvents(newClusters: fresh)
        }
        for c in touched { zeroedClusters.remove(c) }
        return events + [.writeAio]
    }

    /// Compressed data (qcow2_co_pwritev_compressed_task): shorter than a cluster, at
    /// the byte-granular offset qcow2_alloc_bytes chose, with no zero-fill before it
    /// (a partial write of a new cluster is zero-filled first, cluster_alloc_space).
    /// Its length is the compressed size, so it is rarely a whole number of sectors.
    private func isCompressedWrite(_ op: Operation, first: UInt64) -> Bool {
        op.length < shadow.clusterSize && !zeroedClusters.contains(first)
            && (op.offset % 512 != 0 || op.length % 512 != 0)
    }

    /// qcow2_alloc_compressed_cluster_offset: cluster_alloc_bytes, the refcount
    /// update of the bytes (one refblock_alloc + refblock_load per refcount block),
    /// the L2 entry set in the cache (l2_update_compressed), then write_compressed.
    private mutating func compressedWriteEvents(_ touched: [UInt64]) -> [BlkdebugEvent] {
        requestAllocated = true
        var events: [BlkdebugEvent] = [.clusterAllocBytes]
        var blocks: [UInt64] = []
        for c in touched {
            let b = shadow.reftableIndex(clusterOffset: c)
            if !blocks.contains(b) { blocks.append(b); events += [.refblockAlloc, .refblockLoad] }
        }
        clusterAllocRaised = false
        contiguousAllocation = false
        return events + [.l2UpdateCompressed, .writeCompressed]
    }

    /// A refblock of another refcount width (qemu-img amend -o refcount_bits): its first
    /// two entries, the header's and the refcount table's clusters, read 1 in that width
    /// and not in the image's.
    private func isRefblockOfOtherOrder(_ head: [UInt8]) -> Bool {
        guard head.count == 16, RefcountBlock.entry(head, 0, bits: shadow.header.refcountBits) != 1 else { return false }
        return refcountBitsOf(head) != 0
    }

    /// A refblock describes the file: the entry of a cluster well past its end is 0 (guest
    /// data that happens to start with two ones, such as a `write -P 1` pattern, is not).
    private func refcountsEndBeforeFileEnd(_ op: Operation, bits: UInt64, fileSize: UInt64) -> Bool {
        let index = fileSize / shadow.clusterSize + 8, width = max(1, bits / 8)
        guard (index + 1) * width <= shadow.clusterSize else { return true }
        guard let e = op.bytes?(Int(index * width), Int(width)), e.count == Int(width) else { return false }
        return e.allSatisfy { $0 == 0 }
    }

    /// The refcount width (8 … 64 bits) in which `head` starts with two entries of 1; 0 if none.
    private func refcountBitsOf(_ head: [UInt8]) -> UInt64 {
        for bits: UInt64 in [8, 16, 32, 64] where bits != shadow.header.refcountBits {
            if RefcountBlock.entry(head, 0, bits: bits) == 1 && RefcountBlock.entry(head, 1, bits: bits) == 1 { return bits }
        }
        return 0
    }

    /// l2_allocate marks each slice of the new table dirty (l2_alloc_write) before
    /// the L2 cache flush writes it.
    private var l2AllocWrites: [BlkdebugEvent] {
        [BlkdebugEvent](repeating: .l2AllocWrite, count: Int(shadow.clusterSize / shadow.l2SliceSize))
    }

    /// QEMU grows the L1 table by factors of 1.5 from its current size.
    private func isL1GrowthLength(_ length: UInt64) -> Bool {
        guard length % 8 == 0 else { return false }
        var n = UInt64(max(shadow.l1.count, 1))
        while n * 8 < length && n < 1 << 22 { n = (n * 3 + 1) / 2 }
        return n * 8 == length && length > UInt64(shadow.l1.count) * 8
    }

    /// cluster_alloc (unless raised already or the run is extended), then one
    /// refblock_alloc + refblock_load per refcount block the allocation updates.
    private mutating func allocationEvents(newClusters: [UInt64]) -> [BlkdebugEvent] {
        requestAllocated = true
        var events: [BlkdebugEvent] = []
        if !clusterAllocRaised && !contiguousAllocation { events.append(.clusterAlloc) }
        var blocks: [UInt64] = []
        for c in newClusters {
            let b = shadow.reftableIndex(clusterOffset: c)
            if !blocks.contains(b) { blocks.append(b); events += [.refblockAlloc, .refblockLoad] }
        }
        clusterAllocRaised = false
        contiguousAllocation = false
        return events
    }

    // MARK: Helpers

    /// Whether an allocation after the L2 slice just loaded can extend a host run
    /// (qcow2_alloc_clusters_at, no cluster_alloc): some allocated entry followed by an
    /// unallocated one points to a host cluster whose successor is free on disk. Not after
    /// a compressed entry (its successor is no run's), nor when the next host cluster holds
    /// something (a bitmap table, another table): QEMU then allocates anew.
    private mutating func hostRunCanGrow(file: ImageReader) -> Bool {
        guard let slice = file.read(offset: lastL2Load.offset, count: Int(min(lastL2Load.length, shadow.clusterSize))) else { return true }
        let step = Int(shadow.header.l2EntrySize)
        var k = 0
        while k + step + 8 <= slice.count {
            let e = slice.be64(at: k), next = slice.be64(at: k + step)
            k += step
            guard e & Qcow2Entry.offsetMask != 0, e & Qcow2Entry.compressed == 0, next & Qcow2Entry.offsetMask == 0 else { continue }
            let successor = (e & Qcow2Entry.offsetMask) + shadow.clusterSize
            if (shadow.refcount(clusterOffset: successor, file: file) ?? 0) == 0 { return true }
        }
        return false
    }

    /// The refcount blocks covering a table about to be replaced (its free loads each).
    private mutating func noteOldTable(offset: UInt64, bytes: UInt64) {
        guard bytes > 0 else { oldTableBlocks = []; return }
        let first = shadow.reftableIndex(clusterOffset: offset)
        let last = shadow.reftableIndex(clusterOffset: offset + bytes - 1)
        oldTableBlocks = last >= first && last - first < 1 << 16 ? Array(first...last) : []
    }

    private func clusters(of op: Operation) -> [UInt64] {
        guard op.length > 0 else { return [] }
        var result: [UInt64] = []
        var c = shadow.clusterStart(op.offset)
        while c < op.end && result.count < 1 << 16 { result.append(c); c += shadow.clusterSize }
        return result
    }

    /// Whether a refcount block covers the cluster where the file ends.
    private func isCovered(fileEnd: UInt64) -> Bool {
        shadow.isCovered(clusterOffset: shadow.clusterStart(fileEnd &+ shadow.clusterSize &- 1))
    }

    /// `firstIsData`: the caller knows the first cluster holds data (skips its lookup).
    private func runsIntoUnreferenced(_ op: Operation, firstIsData: Bool = false) -> Bool {
        var c = shadow.clusterStart(op.offset), n = 0
        if firstIsData { c += shadow.clusterSize; n = 1 }
        while c < op.end && n < 1 << 16 {
            if case .unreferenced = shadow.region(at: c) { return true }
            c += shadow.clusterSize; n += 1
        }
        return false
    }

    /// Whether `eventsAfter` of the request `eventsBefore` just classified, a read
    /// performed, would change something: it read metadata. Kept by `eventsBefore`,
    /// which looked the region up already.
    private(set) var lastReadIsMetadata = true
    /// The same request read an L2 table (for `recordsWalkReadBeforehand`: no second lookup).
    private var lastReadIsL2Table = false
    /// The last request `eventsBefore` classified was a read in a refcount block.
    private var lastReadIsRefblock = false

    /// For `ImageEngine.decide`, of a read `eventsBefore` just classified as metadata and
    /// that will be performed: if it is an L2 table read that a read-only metadata walk
    /// defers, it is recorded now, as `eventsAfter` would once it succeeded, and the read
    /// needs no after call (a check's ~20,000 table reads each skip one). Should the read
    /// then fail, the table is learnt from the file all the same, if ever: what it holds.
    @inline(__always)  // (one call less on each of a check's table reads)
    mutating func recordsWalkReadBeforehand(_ op: Operation, file: ImageReader) -> Bool {
        guard lastReadIsL2Table, op.kind == .read, op.bytes != nil, defersWalk(op) else { return false }
        deferredWalk.record(table: op.offset, clusterBits: UInt64(shadow.header.clusterBits), fileSize: file.size)
        return true
    }

    /// For `ImageEngine.decide`, of a read `eventsBefore` just classified as metadata and
    /// that will be performed: whether its after call would change nothing. So it is for a
    /// refcount block read whose content the model does not keep (`ShadowImage.learnsFrom`:
    /// `eventsAfter` learns nothing from it) in a process that cannot write the image, with
    /// no snapshot, COW or emptying step under way (nothing for a failed read to give up,
    /// no deferred walk to learn first). Read-only, nothing can cache the block's content
    /// before the read completes but a read of the file, which holds what this read returns.
    /// (`qemu-img check` reads every refcount block, ~2,600 at 20 GiB: each skips an after call.)
    mutating func metadataReadLearnsNothing(_ op: Operation) -> Bool {
        guard lastReadIsRefblock, op.kind == .read, !writable, !snapshot.isActive, shadow.snapshotL1Tables.isEmpty,
              makeEmpty == .none, sharedCow == .none, !cowWritePending, compressedCowFree == .none else { return false }
        // (A refcount block region starts at its cluster: `region(at:)`.)
        return !shadow.learnsFrom(.refcountBlock(blockOffset: shadow.clusterStart(op.offset), reftableIndex: 0),
                                  offset: op.offset, length: op.length)
    }

    /// A read-only metadata walk's read of a whole L2 table: learnt later, if ever.
    @inline(__always)  // (called, it would copy the whole classifier first: ~720 bytes)
    private func defersWalk(_ op: Operation) -> Bool {
        defersWalkLearning && !writable && l1TableReads > 1 && !snapshot.isActive && shadow.snapshotL1Tables.isEmpty
            && makeEmpty == .none && op.length == shadow.clusterSize && op.offset & (shadow.clusterSize - 1) == 0
    }

    /// Whether what the deferred tables hold could matter to `op`: anything but a read,
    /// a read outside the metadata (data, compressed data, unknown clusters), or any
    /// state in which deferring would not have been chosen.
    @inline(__always)  // (called, it would copy the whole classifier first: ~720 bytes)
    private func deferredWalkMatters(_ op: Operation, _ region: Region) -> Bool {
        if op.kind != .read || writable || snapshot.isActive || !shadow.snapshotL1Tables.isEmpty || makeEmpty != .none { return true }
        switch region {
        case .data, .unreferenced: return true
        default: return false
        }
    }

    /// Learns the deferred tables from the file, as their reads would have, and settles
    /// what those reads decided: the last L2 read's boundary, and `contiguousAllocation`
    /// for each deferred read a refcount block read followed.
    private mutating func materializeDeferredWalk(file: ImageReader) {
        let walk = deferredWalk
        deferredWalk = DeferredWalk()
        let bits = UInt64(shadow.header.clusterBits), size = Int(shadow.clusterSize)
        for table in walk.tables {
            guard let bytes = file.read(offset: table, count: size), bytes.count == size else { continue }
            let boundary = bytes.withUnsafeBytes {
                shadow.learnL2Read(offset: table, region: .l2Table(tableOffset: table, l1Index: 0), data: $0, file: file)
            }
            if table == walk.lastTable { lastLoadedSliceHasBoundary = boundary }
            if boundary && walk.wasFollowedByRefblockRead(table, clusterBits: bits) { contiguousAllocation = true }
        }
    }

    private static func isMetadata(_ region: Region, _ kind: OperationKind) -> Bool {
        switch region {
        case .data: return false
        case .unreferenced: return kind == .write
        default: return true
        }
    }

    /// A new table that starts with the current table's entries (L1 growth,
    /// refcount table growth copy the old entries first).
    private func looksLikeTableCopy(_ head: [UInt8], of table: [UInt64], allowZero: Bool) -> Bool {
        let n = min(head.count / 8, table.count)
        guard n > 0, allowZero || table.prefix(n).contains(where: { $0 != 0 }) else { return false }
        for i in 0..<n where head.be64(at: i * 8) != table[i] { return false }
        return true
    }
}
