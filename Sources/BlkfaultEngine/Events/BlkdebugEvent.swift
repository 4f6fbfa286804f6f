/// QEMU 7.2's `BlkdebugEvent` enum, in QEMU's order (qapi/block-core.json).
///
/// This file is the one place that knows the events: their names as rule files
/// spell them, and how blkfault recognises each one from outside QEMU. Adding
/// an event means adding a case and a row in `BlkdebugEvent.table`.
public enum BlkdebugEvent: Int, CaseIterable, Sendable, Hashable {
    case l1Update, l1GrowAllocTable, l1GrowWriteTable, l1GrowActivateTable
    case l2Load, l2Update, l2UpdateCompressed, l2AllocCowRead, l2AllocWrite
    case readAio, readBackingAio, readCompressed, writeAio, writeCompressed
    case vmstateLoad, vmstateSave, cowRead, cowWrite
    case reftableLoad, reftableGrow, reftableUpdate
    case refblockLoad, refblockUpdate, refblockUpdatePart, refblockAlloc
    case refblockAllocHookup, refblockAllocWrite, refblockAllocWriteBlocks
    case refblockAllocWriteTable, refblockAllocSwitchTable
    case clusterAlloc, clusterAllocBytes, clusterFree
    case flushToOS, flushToDisk
    case pwritevRmwHead, pwritevRmwAfterHead, pwritevRmwTail, pwritevRmwAfterTail
    case pwritev, pwritevZero, pwritevDone
    case emptyImagePrepare, l1ShrinkWriteTable, l1ShrinkFreeL2Clusters
    case corWrite, clusterAllocSpace, none
}

/// How blkfault knows that QEMU would raise an event.
public enum Recognition: String, Sendable {
    /// The I/O itself says what it is (a write into the L1 table, an fdatasync).
    case exact
    /// QEMU raises it inside its own algorithm with no I/O of its own; blkfault
    /// infers it from QEMU 7.2's behaviour and raises it before the I/O that follows.
    case inferred
    /// Accepted in rule files, never raised: rules on it never activate.
    case notYet = "not yet"
    /// QEMU 7.2 itself never raises it.
    case neverRaised = "never raised by QEMU 7.2"
}

public struct EventInfo: Sendable {
    public let event: BlkdebugEvent
    public let name: String
    public let recognition: Recognition
    let recognisedBy: String
    /// Armed mid-write by a refcount-block allocation, its once=off result is timing.
    let chunkRace: Bool

    init(event: BlkdebugEvent, name: String, recognition: Recognition, howRecognised: String, chunkRace: Bool = false) {
        self.event = event
        self.name = name
        self.recognition = recognition
        self.recognisedBy = howRecognised
        self.chunkRace = chunkRace
    }

    /// What blkfault watches for, in a user's words.
    public var howRecognised: String { chunkRace ? recognisedBy + BlkdebugEvent.chunkRace : recognisedBy }
}

extension BlkdebugEvent {
    /// The event table: one row per event, in QEMU's enum order.
    ///
    /// Rules armed while a write QEMU splits into chunks allocates a refcount block
    /// (Tests/parity/scenarios.py, UNDECIDABLE_ONCE_OFF).
    static let chunkRace = "; with once=off during a write QEMU splits into allocating chunks, real blkdebug's own result depends on which earlier chunks' data writes have completed (timing: undecidable)"

    public static let table: [EventInfo] = [
        .init(event: .l1Update, name: "l1_update", recognition: .exact, howRecognised: "write into the active L1 table; write-zeroes of the whole table and the 20-byte header write at offset 40 when qemu-img commit empties the image"),
        .init(event: .l1GrowAllocTable, name: "l1_grow_alloc_table", recognition: .notYet, howRecognised: "undecidable before the I/O: its first I/O (a refblock read) looks like any allocation's"),
        .init(event: .l1GrowWriteTable, name: "l1_grow_write_table", recognition: .exact, howRecognised: "write of a whole new L1 table to unreferenced clusters"),
        .init(event: .l1GrowActivateTable, name: "l1_grow_activate_table", recognition: .exact, howRecognised: "12-byte header write at offset 36 (l1_size, l1_table_offset)"),
        .init(event: .l2Load, name: "l2_load", recognition: .exact, howRecognised: "read of an L2 table slice (an L2 cache miss)"),
        .init(event: .l2Update, name: "l2_update", recognition: .exact, howRecognised: "write of an L2 table slice (L2 cache write-back)"),
        .init(event: .l2UpdateCompressed, name: "l2_update_compressed", recognition: .inferred, howRecognised: "before a compressed data write (the L2 entry is set in the cache)"),
        .init(event: .l2AllocCowRead, name: "l2_alloc_cow_read", recognition: .inferred, howRecognised: "before the read of a table shared with a snapshot that l2_allocate copies (not raised when that table is cached)"),
        .init(event: .l2AllocWrite, name: "l2_alloc_write", recognition: .inferred, howRecognised: "before the first write of a new L2 table not yet referenced by L1"),
        .init(event: .readAio, name: "read_aio", recognition: .exact, howRecognised: "read of a guest data cluster"),
        .init(event: .readBackingAio, name: "read_backing_aio", recognition: .inferred, howRecognised: "before the overlay's next request after a data read (or L2 load) of a matched overlay's backing file, which blkfault follows; a read of clusters neither file has does no I/O and is not seen; in qemu-img rebase (its command line) the old backing file's reads are the program's own, through a node of its own, and raise nothing unless a copy-on-write follows"),
        .init(event: .readCompressed, name: "read_compressed", recognition: .exact, howRecognised: "read of compressed data (a cluster a compressed L2 entry points to)"),
        .init(event: .writeAio, name: "write_aio", recognition: .exact, howRecognised: "write of guest data (data clusters or new clusters that no table will reference); with immediately=on in a write QEMU splits into several allocating chunks, blkdebug fails the chunk before QEMU starts the next one, blkfault only at its pwrite, after the next one started (undecidable from outside)"),
        .init(event: .writeCompressed, name: "write_compressed", recognition: .exact, howRecognised: "write shorter than a cluster, not sector-sized, into new space with no zero-fill before it (compressed data)"),
        .init(event: .vmstateLoad, name: "vmstate_load", recognition: .notYet, howRecognised: "undecidable before the I/O: a vmstate request's first I/O does not tell a read from a write"),
        .init(event: .vmstateSave, name: "vmstate_save", recognition: .notYet, howRecognised: "undecidable before the I/O: a vmstate request's first I/O does not tell a read from a write"),
        .init(event: .cowRead, name: "cow_read", recognition: .inferred, howRecognised: "before the write of a copy-on-write from the backing file (a backing read, then one write of whole new clusters in several buffers: head, data, tail), and before the read of a data cluster right after the l1_update of an l2_allocate that copied a table shared with a snapshot; a COW from a compressed cluster reads like a guest read and is not recognised"),
        .init(event: .cowWrite, name: "cow_write", recognition: .inferred, howRecognised: "write of a new cluster right after a read of compressed data (COW over a compressed cluster) or after a cow_read from a cluster shared with a snapshot, or a multi-buffer write of whole new clusters after a backing-file read (COW from the backing file)"),
        .init(event: .reftableLoad, name: "reftable_load", recognition: .exact, howRecognised: "read of the whole refcount table at open"),
        .init(event: .reftableGrow, name: "reftable_grow", recognition: .inferred, howRecognised: "before the refblocks of a new refcount area are written", chunkRace: true),
        .init(event: .reftableUpdate, name: "reftable_update", recognition: .exact, howRecognised: "20-byte header write at offset 40 (L1 and refcount table offsets) when qemu-img commit empties the image"),
        .init(event: .refblockLoad, name: "refblock_load", recognition: .inferred, howRecognised: "each refcount update QEMU makes, cached or not"),
        .init(event: .refblockUpdate, name: "refblock_update", recognition: .neverRaised, howRecognised: "accepted for compatibility; never fires"),
        .init(event: .refblockUpdatePart, name: "refblock_update_part", recognition: .exact, howRecognised: "write of a refcount block (refcount cache write-back)"),
        .init(event: .refblockAlloc, name: "refblock_alloc", recognition: .inferred, howRecognised: "each refcount update QEMU makes, before refblock_load (qemu-img snapshot's refcount walks replayed from the tables); the 8-byte refcount table entry write when qemu-img commit empties the image"),
        .init(event: .refblockAllocHookup, name: "refblock_alloc_hookup", recognition: .exact, howRecognised: "8-byte write into the refcount table (under O_DIRECT, padded by file-posix: a sector-aligned write changing exactly one entry)", chunkRace: true),
        .init(event: .refblockAllocWrite, name: "refblock_alloc_write", recognition: .inferred, howRecognised: "before the first write of the refcount cache flush that writes a new refcount block: an older block's write-back when the allocation's new refcounts reach that block's end, no block covers the next cluster and no L2 entry is dirty (an L1 growth), else the new block's own write (all zeros when it lies in the range of a block that exists)", chunkRace: true),
        .init(event: .refblockAllocWriteBlocks, name: "refblock_alloc_write_blocks", recognition: .inferred, howRecognised: "before the refblocks of a new refcount area (refcount table growth)", chunkRace: true),
        .init(event: .refblockAllocWriteTable, name: "refblock_alloc_write_table", recognition: .exact, howRecognised: "write of a whole new refcount table", chunkRace: true),
        .init(event: .refblockAllocSwitchTable, name: "refblock_alloc_switch_table", recognition: .exact, howRecognised: "12-byte header write at offset 48 (refcount_table_offset, clusters)", chunkRace: true),
        .init(event: .clusterAlloc, name: "cluster_alloc", recognition: .inferred, howRecognised: "start of a cluster allocation (QEMU 7.2's allocator modelled); refcount-block reads right after an fstat of the image are qcow2's metadata-preallocation check (over file-posix only; QEMU skips it over blkdebug) and raise nothing"),
        .init(event: .clusterAllocBytes, name: "cluster_alloc_bytes", recognition: .inferred, howRecognised: "before a compressed data write (in a new process its refblock read is taken for a plain allocation's)"),
        .init(event: .clusterFree, name: "cluster_free", recognition: .inferred, howRecognised: "before the discard of freed data clusters (one per cluster); qemu-img snapshot's frees of the old snapshot table and of a deleted snapshot's L1 table; other frees are not modelled yet"),
        .init(event: .flushToOS, name: "flush_to_os", recognition: .inferred, howRecognised: "start of a full flush of the qcow2 node (writethrough after each write; qemu-img snapshot's flushes after each refcount walk and around the snapshot table; the close after qemu-img commit empties the image); a once rule failing the close's dependency flush (or its last flush) after qemu-img check -r or amend is absorbed (the flush is performed, the trace says `absorbed`): blkdebug fails it above file-posix and QEMU flushes again, a failed fdatasync would be latched; with once=off at the flush after a write QEMU split into allocating chunks, real blkdebug's own result depends on which chunks' L2 entries an earlier allocation wrote back, i.e. on when their data writes completed (timing: undecidable)"),
        .init(event: .flushToDisk, name: "flush_to_disk", recognition: .inferred, howRecognised: "the full flush's fdatasync (not the first write of a session; also qemu-io's close after compressed writes, which have no flush of their own: a once rule failing it is absorbed, as blkdebug's failure is retried by qcow2_close)"),
        .init(event: .pwritevRmwHead, name: "pwritev_rmw_head", recognition: .neverRaised, howRecognised: "only with blkdebug's align option; under O_DIRECT (-t none) file-posix pads unaligned writes below blkdebug, which raises nothing"),
        .init(event: .pwritevRmwAfterHead, name: "pwritev_rmw_after_head", recognition: .neverRaised, howRecognised: "only with blkdebug's align option; under O_DIRECT (-t none) file-posix pads unaligned writes below blkdebug, which raises nothing"),
        .init(event: .pwritevRmwTail, name: "pwritev_rmw_tail", recognition: .neverRaised, howRecognised: "only with blkdebug's align option; under O_DIRECT (-t none) file-posix pads unaligned writes below blkdebug, which raises nothing"),
        .init(event: .pwritevRmwAfterTail, name: "pwritev_rmw_after_tail", recognition: .neverRaised, howRecognised: "only with blkdebug's align option; under O_DIRECT (-t none) file-posix pads unaligned writes below blkdebug, which raises nothing"),
        .init(event: .pwritev, name: "pwritev", recognition: .exact, howRecognised: "every write"),
        .init(event: .pwritevZero, name: "pwritev_zero", recognition: .exact, howRecognised: "every write-zeroes (fallocate zero range / punch hole)"),
        .init(event: .pwritevDone, name: "pwritev_done", recognition: .exact, howRecognised: "after every write or write-zeroes, failed or not"),
        .init(event: .emptyImagePrepare, name: "empty_image_prepare", recognition: .exact, howRecognised: "write-zeroes over the clusters after the header, right after the whole L1 table was zeroed (qemu-img commit empties the image)"),
        .init(event: .l1ShrinkWriteTable, name: "l1_shrink_write_table", recognition: .exact, howRecognised: "write-zeroes into the active L1 table (qemu-img resize --shrink)"),
        .init(event: .l1ShrinkFreeL2Clusters, name: "l1_shrink_free_l2_clusters", recognition: .inferred, howRecognised: "after the shrink's L1 flush: one cluster_free per dropped L2 table"),
        .init(event: .corWrite, name: "cor_write", recognition: .neverRaised, howRecognised: "raised on the copy-on-read node (the qcow2 node), not on its file: blkdebug as an image's file node never sees it (qemu-io -C); the copy's read and write raise read_backing_aio and write_aio"),
        .init(event: .clusterAllocSpace, name: "cluster_alloc_space", recognition: .exact, howRecognised: "write-zeroes of new clusters right before a partial-cluster data write, or of whole known data clusters (a preallocated zero cluster's zero-fill)"),
        .init(event: .none, name: "none", recognition: .exact, howRecognised: "end of open: before the first I/O on the image"),
    ]

    public var info: EventInfo { Self.table[rawValue] }
    public var name: String { info.name }

    /// The event a rule file names, spelled exactly as QEMU spells it (case-sensitive).
    public init?(name: String) {
        // The table holds only literals, so building it at the engine's start is cheap
        // (text that was interpolated into rows cost ~55 K instructions: issue 7).
        guard let row = Self.table.first(where: { $0.name == name }) else { return nil }
        self = row.event
    }
}
