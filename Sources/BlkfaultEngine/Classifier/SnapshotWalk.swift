/// qcow2_update_snapshot_refcount (qemu-img snapshot -c/-a/-d): a walk over one L1
/// table's L2 tables through the L2 cache, with one refcount update per allocated
/// cluster and one per L2 table (each `refblock_alloc` + `refblock_load`; none when
/// the addend is 0), then a full flush of the qcow2 node (`flush_to_os`). Only cache
/// misses reach the file — L2 slice reads and refcount block reads — so the events
/// between them are replayed here from the tables on disk.
struct SnapshotWalk: Sendable {
    enum Item: Sendable, Equatable {
        /// An L2 slice fetched through the cache (read only on a miss).
        case l2Slice(UInt64)
        /// `count` refcount updates of clusters in the refblock at this reftable index.
        case updates(reftableIndex: UInt64, count: Int)
    }
    private(set) var items: [Item] = []
    private var next = 0

    /// `l1`: the walked table's entries; `updating`: the addend is not 0.
    init(l1: [UInt64], updating: Bool, shadow: ShadowImage, file: ImageReader) {
        let sliceSize = shadow.l2SliceSize, step = Int(shadow.header.l2EntrySize)
        let bits = UInt64(shadow.header.clusterBits)
        var budget = 1 << 22  // slices and entries looked at: a hostile L1 must not make this endless
        for e in l1 {
            let l2 = e & Qcow2Entry.offsetMask
            guard l2 != 0, l2 % shadow.clusterSize == 0 else { continue }
            var slice: UInt64 = 0
            while slice < shadow.clusterSize && budget > 0 {
                items.append(.l2Slice(l2 + slice))
                budget -= 1
                if updating, let data = file.read(offset: l2 + slice, count: Int(sliceSize)) {
                    var k = 0
                    while k + 8 <= data.count && budget > 0 {
                        let entry = data.be64(at: k)
                        budget -= 1
                        k += step
                        if entry & Qcow2Entry.compressed != 0 {
                            // update_refcount over the compressed bytes: one update per refblock.
                            let shift = UInt64(62) - (bits - 8)
                            let host = entry & ((1 << shift) - 1)
                            let sectors = ((entry >> shift) & ((1 << (bits - 8)) - 1)) + 1
                            let first = shadow.reftableIndex(clusterOffset: host)
                            let last = shadow.reftableIndex(clusterOffset: (host & ~511) + sectors * 512 - 1)
                            add(first)
                            if last != first { add(last) }
                        } else if entry & Qcow2Entry.offsetMask != 0 {
                            add(shadow.reftableIndex(clusterOffset: entry & Qcow2Entry.offsetMask))
                        }
                    }
                }
                slice += sliceSize
            }
            if updating { add(shadow.reftableIndex(clusterOffset: l2)) }
        }
    }

    private mutating func add(_ index: UInt64) {
        if case .updates(let i, let n)? = items.last, i == index {
            items[items.count - 1] = .updates(reftableIndex: i, count: n + 1)
        } else {
            items.append(.updates(reftableIndex: index, count: 1))
        }
    }

    private static let update: [BlkdebugEvent] = [.refblockAlloc, .refblockLoad]

    /// The events before a read of an L2 slice the walk fetches next (a cache miss);
    /// nil if the walk fetches no such slice.
    mutating func beforeL2Read(_ offset: UInt64) -> [BlkdebugEvent]? {
        guard let at = items[next...].firstIndex(of: .l2Slice(offset)) else { return nil }
        var events: [BlkdebugEvent] = []
        for item in items[next..<at] { events += Self.events(item) }
        next = at + 1
        return events
    }

    /// The events before a read of a refcount block: the updates up to the first one in
    /// that block (load_refcount_block's cache miss). None for a read of qcow2_get_refcount.
    mutating func beforeRefblockRead(reftableIndex index: UInt64) -> [BlkdebugEvent] {
        var at = next
        while at < items.count {
            if case .updates(let i, _) = items[at], i == index { break }
            at += 1
        }
        guard at < items.count, case .updates(let i, let n) = items[at] else { return [] }
        var events: [BlkdebugEvent] = []
        for item in items[next..<at] { events += Self.events(item) }
        events += Self.update
        if n > 1 { items[at] = .updates(reftableIndex: i, count: n - 1); next = at } else { next = at + 1 }
        return events
    }

    /// The walk is over (its next I/O is not a cache miss): the updates left, then the
    /// full flush that ends qcow2_update_snapshot_refcount.
    mutating func finish() -> [BlkdebugEvent] {
        var events: [BlkdebugEvent] = []
        for item in items[next...] { events += Self.events(item) }
        next = items.count
        return events + [.flushToOS]
    }

    private static func events(_ item: Item) -> [BlkdebugEvent] {
        guard case .updates(_, let n) = item else { return [] }
        var events: [BlkdebugEvent] = []
        events.reserveCapacity(2 * n)
        for _ in 0..<n { events += update }
        return events
    }
}
