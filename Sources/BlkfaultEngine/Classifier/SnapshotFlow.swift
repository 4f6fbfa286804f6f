/// Where `qemu-img snapshot` stands (QEMU 7.2, qcow2-snapshot.c): the refcount walks
/// of qcow2_update_snapshot_refcount, the snapshot table rewrite of
/// qcow2_write_snapshots and the frees around them. What starts each step is an I/O
/// only these commands do: a read of a whole snapshot L1 table (apply, delete), a copy
/// of the active L1 table (create), a rewrite of the whole active L1 table (apply), and
/// the 12-byte header write of nb_snapshots and snapshots_offset.
///
/// - create: copy the active L1; walk it (+1); flush; rewrite it (COPIED flags);
///   allocate the new snapshot table (cluster_alloc), flush, write it, flush, switch
///   the header to it, free the old table (cluster_free).
/// - apply (-a): read the snapshot's L1; walk it (+1); flush; rewrite it; overwrite the
///   active L1 with it; walk the old active table (-1); flush; discards; walk the new
///   active table (0); flush; rewrite it.
/// - delete (-d): write the snapshot table without the snapshot (header first when it
///   was the last one), free the old table; read the snapshot's L1; walk it (-1);
///   flush; discards; free the L1 table (cluster_free); walk the active table (0); flush.
struct SnapshotFlow: Sendable {
    enum WalkKind: Sendable, Equatable {
        /// Over a snapshot's L1 table read from the file (apply +1, delete -1).
        case snapshotL1(offset: UInt64, bytes: UInt64)
        /// Over the active L1 right after its copy (create, +1).
        case activeCopied
        /// Over the active L1 just overwritten by apply, with its old entries (-1).
        case activeReplaced
        /// Over the active L1 to set its COPIED flags (0).
        case copiedFlags
    }
    enum TableStage: Sendable { case idle, awaitsAllocation, allocated, writing, flushed }

    private var walk: SnapshotWalk?
    private var walkKind = WalkKind.copiedFlags
    /// A walk that starts at the next I/O that is not a flush (after a bdrv_pwrite_sync).
    private var pendingWalk: (SnapshotWalk, WalkKind)?
    /// The last walk's flush (and then its discards) is still going.
    private var afterWalk = false
    /// A walk of the active table (addend 0) follows the last walk's flush and discards.
    private var copiedFlagsWalkNext = false
    /// apply: the active L1's overwrite comes next.
    private var applyAwaitsOverwrite = false
    /// delete: the snapshot's L1 table is freed after the walk's flush and discards.
    private var deletedL1: (offset: UInt64, bytes: UInt64)?
    private var table = TableStage.idle
    /// qcow2_write_snapshots ran first in this process: a walk over a snapshot's L1
    /// table then belongs to snapshot -d.
    private var headerWritten = false
    /// qcow2_free_clusters of the old snapshot table: raised before the next I/O that
    /// is not the header write's sync.
    private var pendingFree: [BlkdebugEvent] = []

    /// A refcount walk ran in this process: a write of the whole active L1 table is then
    /// its COPIED flags' rewrite, whatever its length (an L1 table of one entry is 8 bytes).
    private(set) var walked = false

    var isActive: Bool {
        walk != nil || pendingWalk != nil || afterWalk || !pendingFree.isEmpty || table != .idle
            || applyAwaitsOverwrite
    }

    /// What happened to an I/O before the classifier's own look at it.
    struct Outcome {
        var events: [BlkdebugEvent] = []
        /// The I/O is the walk's (a cache miss): no other events.
        var consumed = false
        /// A walk ended: its full flush started (the classifier's FullFlush follows it).
        var flushStarted = false
    }

    mutating func before(_ op: Operation, _ region: Region, isWriteBack: Bool,
                         shadow: ShadowImage, file: ImageReader) -> Outcome {
        var out = Outcome()
        if !pendingFree.isEmpty && op.kind != .flush {
            out.events += pendingFree
            pendingFree = []
            // load_refcount_block's cache miss: the free's own read.
            if op.kind == .read, case .refcountBlock = region { out.consumed = true; return out }
        }
        if afterWalk && !(isWriteBack || op.kind == .flush) {
            if op.kind == .discard, deletedL1.map({ $0.offset != op.offset }) ?? true, !copiedFlagsWalkNext {
                // qcow2_process_discards after the walk's flush.
                return out
            }
            afterWalk = false
            if let l1 = deletedL1 {
                out.events += SnapshotFlow.freeEvents(offset: l1.offset, bytes: l1.bytes, shadow: shadow)
                deletedL1 = nil
                copiedFlagsWalkNext = true
            }
            if copiedFlagsWalkNext {
                copiedFlagsWalkNext = false
                walk = SnapshotWalk(l1: shadow.l1, updating: false, shadow: shadow, file: file)
                walkKind = .copiedFlags
            }
        }
        if let (w, kind) = pendingWalk, op.kind != .flush {
            walk = w; walkKind = kind; pendingWalk = nil
        }
        if op.kind == .read, let n = shadow.snapshotL1Tables[op.offset], UInt64(n) * 8 == op.length,
           let bytes = file.read(offset: op.offset, count: n * 8), bytes.count == n * 8 {
            // qcow2_snapshot_goto's read, then qcow2_update_snapshot_refcount's: (re)start.
            let l1 = (0..<n).map { bytes.be64(at: $0 * 8) }
            walk = SnapshotWalk(l1: l1, updating: true, shadow: shadow, file: file)
            walkKind = .snapshotL1(offset: op.offset, bytes: op.length)
            out.consumed = true
            return out
        }
        guard var w = walk else { return out }
        switch op.kind {
        case .discard:
            return out  // qcow2 holds discards back during the walk
        case .read:
            if op.length == shadow.l2SliceSize, let e = w.beforeL2Read(op.offset) {
                out.events += e + [.l2Load]
                out.consumed = true
                walk = w
                return out
            }
            if case .refcountBlock(_, let index) = region {
                out.events += w.beforeRefblockRead(reftableIndex: index)
                out.consumed = true
                walk = w
                return out
            }
        default: break
        }
        out.events += w.finish()
        out.flushStarted = true
        walk = nil
        afterWalk = true
        walked = true
        switch walkKind {
        case .snapshotL1(let offset, let bytes):
            if headerWritten { deletedL1 = (offset, bytes) } else { applyAwaitsOverwrite = true }
        case .activeCopied: table = .awaitsAllocation
        case .activeReplaced: copiedFlagsWalkNext = true
        case .copiedFlags: break
        }
        return out
    }

    /// A copy of the active L1 table went to new clusters (snapshot -c).
    mutating func activeL1Copied(shadow: ShadowImage, file: ImageReader) {
        pendingWalk = (SnapshotWalk(l1: shadow.l1, updating: true, shadow: shadow, file: file), .activeCopied)
    }

    /// The whole active L1 table is rewritten; in apply, with the snapshot's entries:
    /// the walk over its old entries follows.
    mutating func activeL1Rewritten(shadow: ShadowImage, file: ImageReader) {
        guard applyAwaitsOverwrite else { return }
        applyAwaitsOverwrite = false
        pendingWalk = (SnapshotWalk(l1: shadow.l1, updating: true, shadow: shadow, file: file), .activeReplaced)
    }

    /// A refcount block write that allocates: the new snapshot table when create's walk
    /// is done. Returns whether it is (its flush raises flush_to_os).
    mutating func snapshotTableAllocated() -> Bool {
        guard table == .awaitsAllocation else { return false }
        table = .allocated
        return true
    }

    /// A piece of the new snapshot table was written.
    mutating func snapshotTableWritten() {
        if table == .allocated { table = .writing }
    }

    /// An fdatasync: after the table's pieces, the flush before the header switch.
    mutating func sync() -> [BlkdebugEvent] {
        guard table == .writing else { return [] }
        table = .flushed
        return [.flushToOS]
    }

    /// The header's nb_snapshots and snapshots_offset (qcow2_write_snapshots). With no
    /// snapshot left the table is empty: its allocation and both flushes have no I/O.
    mutating func snapshotHeaderWrite(newCount: UInt32, shadow: ShadowImage) -> [BlkdebugEvent] {
        var events: [BlkdebugEvent] = []
        if newCount == 0 {
            events = [.clusterAlloc, .flushToOS, .flushToOS]
        } else if table == .writing || table == .allocated {
            events = [.flushToOS]
        }
        table = .idle
        headerWritten = true
        pendingFree = SnapshotFlow.freeEvents(offset: shadow.header.snapshotsOffset,
                                              bytes: shadow.snapshotTableSize, shadow: shadow)
        return events
    }

    /// A request failed: QEMU gives the operation up.
    mutating func abandon() {
        walk = nil; pendingWalk = nil; afterWalk = false; copiedFlagsWalkNext = false
        applyAwaitsOverwrite = false; deletedL1 = nil; table = .idle
    }

    /// qcow2_free_clusters: cluster_free, then one refcount update per refblock.
    static func freeEvents(offset: UInt64, bytes: UInt64, shadow: ShadowImage) -> [BlkdebugEvent] {
        var events: [BlkdebugEvent] = [.clusterFree]
        guard bytes > 0 else { return events }
        let first = shadow.reftableIndex(clusterOffset: offset)
        let last = shadow.reftableIndex(clusterOffset: offset &+ bytes &- 1)
        let blocks = last >= first ? min(last - first, 1024) + 1 : 0
        for _ in 0..<blocks { events += [.refblockAlloc, .refblockLoad] }
        return events
    }
}
