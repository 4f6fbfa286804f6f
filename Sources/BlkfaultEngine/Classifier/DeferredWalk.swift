/// L2 tables a metadata walk read (qemu-img check without -r: the image open read-only,
/// every table read whole, bypassing QEMU's L2 cache) that the shadow model has not
/// learnt yet. Learning them is most of blkfault's cost in a check (~7 instructions per
/// entry, 10.5 M entries for 10,240 tables read twice), and what it learns (which host
/// clusters hold data, which hold compressed data, whether a table ends an allocated
/// run) decides nothing in a process that cannot write the image until a read lands
/// outside the metadata. So the classifier only records the tables and learns them
/// from the file, in one go, before anything could depend on them (`Qcow2Classifier`:
/// `materializeDeferredWalk`). The file holds what was read: no fd of this process
/// can write it, and QEMU's image locking keeps writers of other processes out.
struct DeferredWalk: Sendable {
    /// Table cluster offsets, each once, in the order first read.
    private(set) var tables: [UInt64] = []
    private var known = ClusterSet()
    /// Tables whose read a refcount block read followed: with an allocated-then-free
    /// boundary, that read set `contiguousAllocation` (Qcow2Classifier.readEvents).
    private var followedByRefblockRead = ClusterSet()
    /// The last L2 read was of this deferred table: `lastLoadedSliceHasBoundary` is its.
    var lastTable: UInt64?

    var isEmpty: Bool { tables.isEmpty }

    /// `fileSize`: sizes the set at the first table (growing it table by table copied it ~17
    /// times in a 20 GiB check).
    @inline(__always)  // (one call less on each of a check's table reads)
    mutating func record(table: UInt64, clusterBits: UInt64, fileSize: @autoclosure () -> UInt64) {
        if tables.isEmpty { known.reserve(upTo: fileSize() >> clusterBits) }
        if known.insert(table >> clusterBits) { tables.append(table) }
        lastTable = table
    }

    mutating func noteRefblockReadAfter(table: UInt64, clusterBits: UInt64) {
        followedByRefblockRead.insert(table >> clusterBits)
    }

    func wasFollowedByRefblockRead(_ table: UInt64, clusterBits: UInt64) -> Bool {
        followedByRefblockRead.contains(table >> clusterBits)
    }
}
