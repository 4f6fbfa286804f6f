/// What a byte range of the image file holds, as far as the shadow model knows.
public enum Region: Equatable, Sendable {
    /// Cluster 0: header and header extensions.
    case header
    /// Entries of the active L1 table.
    case l1Table(firstIndex: UInt64)
    /// Entries of the refcount table.
    case refcountTable(firstIndex: UInt64)
    /// A cluster the active L1 table points to.
    case l2Table(tableOffset: UInt64, l1Index: UInt64)
    /// A cluster the refcount table points to.
    case refcountBlock(blockOffset: UInt64, reftableIndex: UInt64)
    /// A cluster an L2 table we have seen points to.
    case data
    /// A cluster nothing we know points to: free space, a table being built, or
    /// data in an L2 table this process has not read.
    case unreferenced
}

/// The qcow2 shadow model: the image's metadata as it is on disk, kept up to date
/// from the I/O the program does. Memory follows the metadata, never the image size:
/// the L1 and refcount tables, one entry per known L2 table and refblock, the
/// refblocks read so far, and the set of host clusters known to hold data (its bitmap
/// sized for the guest's clusters, at most 1 MiB, once an L2 table is learnt).
public struct ShadowImage: Sendable {
    public private(set) var header: Qcow2Header
    public private(set) var l1: [UInt64]
    public private(set) var reftable: [UInt64]
    /// L2 table cluster offset -> L1 index.
    public private(set) var l2Tables = OffsetMap<UInt64>()
    /// Bit i: `l2Tables` maps L1 entry i's table to i (a corrupt L1 may name a table twice;
    /// the last write owns it). Lets a reread of an unchanged entry skip the lookup.
    private var l1Owners: [UInt64] = []
    /// L2 tables of internal snapshots (cluster offset -> index in the snapshot's L1):
    /// qcow2 reads and writes them through its L2 cache too (snapshot apply, delete).
    public private(set) var snapshotL2Tables = OffsetMap<UInt64>()
    /// L1 tables of internal snapshots, also of ones deleted in this process:
    /// offset -> number of entries.
    public private(set) var snapshotL1Tables: [UInt64: Int] = [:]
    /// Bytes of the snapshot table (what qcow2_write_snapshots frees when it replaces it).
    public private(set) var snapshotTableSize: UInt64 = 0
    /// Refblock cluster offset -> refcount table index.
    public private(set) var refblocks = OffsetMap<UInt64>()
    /// Host cluster indices that an L2 entry we have seen points to.
    public private(set) var dataClusters = ClusterSet()
    /// Host cluster indices holding compressed data an L2 entry we have seen points to
    /// (rare: a hashed set).
    public private(set) var compressedClusters: Set<UInt64> = []
    /// Host cluster indices whose L2 entry we last saw with the zero flag (a preallocated
    /// zero cluster, QCOW2_CLUSTER_ZERO_ALLOC): a write into one changes the entry without
    /// allocating. Filled only from slices that hold such entries (a bitmap, as
    /// `dataClusters`: a large `write -z` over allocated clusters leaves many).
    public private(set) var zeroFlagClusters = ClusterSet()
    /// Host cluster indices that are L2 tables (active or a snapshot's) or refblocks:
    /// `region(at:)` looks the dictionaries up only for these.
    private var tableClusters = ClusterSet()
    /// Refblock contents as on disk, loaded on demand.
    private var refblockData = OffsetMap<[UInt8]>()
    /// Host cluster indices that held metadata or data we saw released (an old L1
    /// or refcount table after a move, a discarded data cluster): QEMU reuses them
    /// first, possibly without their refcount ever reaching 0 on disk.
    private var releasedClusters: Set<UInt64> = []
    /// Changes whenever a host cluster may stop being wholly guest data (`wholeDataWord`
    /// may lose a bit): a data cluster forgotten, a cluster becoming a table, the header,
    /// L1 or refcount table moved or resized. Nothing else changes it: learning new data
    /// clusters or dropping a table only adds bits, and bookkeeping (zero flags, cached
    /// refblocks, released clusters) changes no region. The preload's steady pre-filter
    /// keeps the clusters it learnt while this stays the same.
    public private(set) var layoutVersion: UInt64 = 0

    public var clusterSize: UInt64 { header.clusterSize }
    /// Bytes QEMU reads or writes per L2 cache entry (notes §4.9).
    public var l2SliceSize: UInt64 {
        let needed = (header.size / clusterSize) * header.l2EntrySize
        return needed <= 32 << 20 ? clusterSize : min(clusterSize, 4096)
    }

    /// A model with no tables (ImageEngine's placeholder while the file is not qcow2).
    init(empty header: Qcow2Header) {
        self.header = header
        l1 = []; reftable = []
    }

    /// Reads header, L1 table and refcount table from the file.
    public init(reading file: ImageReader) throws(Qcow2Error) {
        guard let first = file.read(offset: 0, count: Qcow2Header.readLength) else { throw .truncated("header") }
        var header = try Qcow2Header(bytes: first)
        if let cluster0 = file.read(offset: 0, count: Int(header.clusterSize)) { header.parseExtensions(cluster0: cluster0) }
        self.header = header
        l1 = []; reftable = []
        try loadL1(file, rebuild: false)  // loadReftable's rebuild covers both
        try loadReftable(file)
        loadSnapshotL2Tables(file)
    }

    /// The snapshot table's entries (notes §4.8): L1 offset at 0, L1 size at 8, then
    /// id and name lengths, dates, VM state size and extra data; padded to 8 bytes.
    private mutating func loadSnapshotL2Tables(_ file: ImageReader) {
        var offset = header.snapshotsOffset
        // L1 tables stay known after their snapshot is deleted: qcow2 walks it afterwards.
        let previous = snapshotL2Tables
        snapshotL2Tables = [:]; snapshotTableSize = 0
        defer { snapshotTableSize = header.nbSnapshots == 0 ? 0 : offset &- header.snapshotsOffset }
        for _ in 0..<min(Int(header.nbSnapshots), 1024) {
            // Each entry starts 8-aligned; the table's size ends at the last name.
            offset = (offset &+ 7) & ~7
            guard let e = file.read(offset: offset, count: 40), e.count == 40 else { break }
            let l1Offset = e.be64(at: 0), l1Size = Int(e.be32(at: 8))
            let idLen = UInt64(e[12]) << 8 | UInt64(e[13]), nameLen = UInt64(e[14]) << 8 | UInt64(e[15])
            let extra = UInt64(e.be32(at: 36))
            if l1Size > 0 { snapshotL1Tables[l1Offset] = l1Size }
            if l1Size > 0, l1Size < 1 << 22, let t = file.read(offset: l1Offset, count: l1Size * 8), t.count == l1Size * 8 {
                for i in 0..<l1Size {
                    let l2 = t.be64(at: i * 8) & Qcow2Entry.offsetMask
                    if l2 != 0, snapshotL2Tables[l2] == nil { snapshotL2Tables[l2] = UInt64(i) }
                }
            }
            // Saturating: a damaged table's lengths may point anywhere.
            let next = offset.addingReportingOverflow(40 + extra + idLen + nameLen)
            if next.overflow { break }
            offset = next.partialValue
        }
        // `tableClusters` follows the three tables' keys: unchanged when these are (every
        // read of the header's first bytes comes here, and a rebuild walks all tables).
        if snapshotL2Tables != previous { rebuildTableClusters() }
    }

    private mutating func loadL1(_ file: ImageReader, rebuild: Bool = true) throws(Qcow2Error) {
        let count = Int(header.l1Size)
        guard count > 0 else { l1 = []; l1Owners = []; return }
        guard header.l1TableOffset % clusterSize == 0,
              let b = file.read(offset: header.l1TableOffset, count: count * 8), b.count == count * 8
        else { throw .truncated("L1 table") }
        l1 = Self.entries(b, count)
        l2Tables = [:]
        var tables = OffsetMap<UInt64>(), owners = filledArray(UInt64(0), count: (count + 63) / 64)
        tables.reserveCapacity(l1.lazy.filter { $0 & Qcow2Entry.offsetMask != 0 }.count)
        for (i, e) in l1.enumerated() where e & Qcow2Entry.offsetMask != 0 {
            if let previous = tables.updateValue(UInt64(i), forKey: e & Qcow2Entry.offsetMask) { Self.clear(&owners, Int(previous)) }
            Self.set(&owners, i)
        }
        l2Tables = tables
        l1Owners = owners
        layoutVersion &+= 1
        if rebuild { rebuildTableClusters() }
    }

    private static func set(_ bits: inout [UInt64], _ i: Int) { bits[i >> 6] |= 1 << UInt64(i & 63) }
    private static func clear(_ bits: inout [UInt64], _ i: Int) { bits[i >> 6] &= ~(1 << UInt64(i & 63)) }

    private mutating func loadReftable(_ file: ImageReader) throws(Qcow2Error) {
        let bytes = Int(header.refcountTableSize)
        guard header.refcountTableOffset % clusterSize == 0,
              let b = file.read(offset: header.refcountTableOffset, count: bytes), b.count == bytes
        else { throw .truncated("refcount table") }
        var used = 0, end = 0
        reftable = Self.entries(b, bytes / 8, used: &used, end: &end)
        refblocks = [:]
        refblockData = [:]
        var blocks = OffsetMap<UInt64>()
        blocks.reserveCapacity(used)
        reftable.withUnsafeBufferPointer { t in
            // Groups of four empty entries skipped with one test: a refcount table is
            // mostly empty (8,192 entries in a 64 KiB cluster, a few used). None past `end`
            // is non-zero (issue 7, s8-7a: ~30 K instructions at every attach).
            var i = 0
            while i < end {
                if i &+ 4 <= end && (t[i] | t[i &+ 1] | t[i &+ 2] | t[i &+ 3]) & Qcow2Entry.offsetMask == 0 { i &+= 4; continue }
                if t[i] & Qcow2Entry.offsetMask != 0 { blocks[t[i] & Qcow2Entry.offsetMask] = UInt64(i) }
                i &+= 1
            }
        }
        refblocks = blocks
        layoutVersion &+= 1
        rebuildTableClusters()
    }

    /// The first `count` big-endian 64-bit entries of a table read at attach, in one pass
    /// (a 64 KiB refcount table is 8,192 entries in every process that opens the image).
    private static func entries(_ b: [UInt8], _ count: Int) -> [UInt64] {
        var used = 0, end = 0
        return entries(b, count, used: &used, end: &end)
    }

    /// `entries`, counting in `used` the entries with an offset (in the same pass), and
    /// setting `end` past the last non-zero entry.
    private static func entries(_ b: [UInt8], _ count: Int, used: inout Int, end: inout Int) -> [UInt64] {
        precondition(count * 8 <= b.count, "table shorter than its entries")
        var n = 0, last = 0
        let table = [UInt64](unsafeUninitializedCapacity: count) { out, initialized in
            b.withUnsafeBytes { raw in
                // Four entries: the empty groups with one test (most of a refcount table).
                @inline(__always) func group(_ i: Int) {
                    let a = raw.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)
                    let b = raw.loadUnaligned(fromByteOffset: i &* 8 &+ 8, as: UInt64.self)
                    let c = raw.loadUnaligned(fromByteOffset: i &* 8 &+ 16, as: UInt64.self)
                    let d = raw.loadUnaligned(fromByteOffset: i &* 8 &+ 24, as: UInt64.self)
                    if a | b | c | d == 0 {
                        out[i] = 0; out[i &+ 1] = 0; out[i &+ 2] = 0; out[i &+ 3] = 0
                    } else {
                        last = i &+ 4
                        let va = UInt64(bigEndian: a), vb = UInt64(bigEndian: b)
                        let vc = UInt64(bigEndian: c), vd = UInt64(bigEndian: d)
                        out[i] = va; out[i &+ 1] = vb; out[i &+ 2] = vc; out[i &+ 3] = vd
                        let m = Qcow2Entry.offsetMask
                        n &+= (va & m != 0 ? 1 : 0) &+ (vb & m != 0 ? 1 : 0) &+ (vc & m != 0 ? 1 : 0) &+ (vd & m != 0 ? 1 : 0)
                    }
                }
                // Eight at a time, an empty eight with vector loads and stores (~1.5
                // instructions an entry, not ~5.5; issue 7, s8-7a).
                let store = UnsafeMutableRawPointer(out.baseAddress!)
                var i = 0
                while i &+ 8 <= count {
                    let v = raw.loadUnaligned(fromByteOffset: i &* 8, as: SIMD4<UInt64>.self)
                        | raw.loadUnaligned(fromByteOffset: i &* 8 &+ 32, as: SIMD4<UInt64>.self)
                    let w = v.lowHalf | v.highHalf
                    if w[0] | w[1] == 0 {
                        store.storeBytes(of: SIMD4<UInt64>(), toByteOffset: i &* 8, as: SIMD4<UInt64>.self)
                        store.storeBytes(of: SIMD4<UInt64>(), toByteOffset: i &* 8 &+ 32, as: SIMD4<UInt64>.self)
                    } else {
                        group(i)
                        group(i &+ 4)
                    }
                    i &+= 8
                }
                while i &+ 4 <= count {
                    group(i)
                    i &+= 4
                }
                while i < count {
                    let v = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))
                    out[i] = v
                    n &+= v & Qcow2Entry.offsetMask != 0 ? 1 : 0
                    i &+= 1
                    if v != 0 { last = i }
                }
            }
            initialized = count
        }
        used = n
        end = last
        return table
    }

    // MARK: Classification

    func clusterStart(_ offset: UInt64) -> UInt64 { offset & ~(clusterSize - 1) }

    /// What the byte at `offset` belongs to.
    @inline(__always)
    public func region(at offset: UInt64) -> Region {
        let bits = UInt64(header.clusterBits) & 63
        if let fixed = fixedRegion(at: offset, bits: bits) { return fixed }
        let index = offset &>> bits
        if tableClusters.contains(index) { return tableRegion(cluster: index &<< bits, index: index) }
        if dataClusters.contains(index) { return .data }
        return .unreferenced
    }

    /// The header, L1 table or refcount table holding `offset`, if one does. Wrapping
    /// and masking arithmetic: clusterBits is 9...21 and the tables' sizes are far below
    /// 2^61, so none of it can overflow, and the checked forms cost a metadata walk ~40
    /// instructions a lookup (issue 7, callgrind).
    @inline(__always)
    private func fixedRegion(at offset: UInt64, bits: UInt64) -> Region? {
        if offset &>> bits == 0 { return .header }
        // Differences, not sums: a hostile header's offsets may lie near 2^64.
        let l1Start = header.l1TableOffset
        if offset >= l1Start && offset &- l1Start < UInt64(l1.count) &<< 3 { return .l1Table(firstIndex: (offset &- l1Start) &>> 3) }
        let rtStart = header.refcountTableOffset
        if offset >= rtStart && offset &- rtStart < UInt64(header.refcountTableClusters) &<< bits {
            return .refcountTable(firstIndex: (offset &- rtStart) &>> 3)
        }
        return nil
    }

    /// `region(at:)` of a cluster `tableClusters` holds.
    @inline(__always)
    private func tableRegion(cluster: UInt64, index: UInt64) -> Region {
        if let i = l2Tables[cluster] { return .l2Table(tableOffset: cluster, l1Index: i) }
        if !snapshotL2Tables.isEmpty, let i = snapshotL2Tables[cluster] { return .l2Table(tableOffset: cluster, l1Index: i) }
        if let i = refblocks[cluster] { return .refcountBlock(blockOffset: cluster, reftableIndex: i) }
        if dataClusters.contains(index) { return .data }
        return .unreferenced
    }

    /// `region(at:)` for a caller holding the model inout (the classifier's mutating
    /// methods): `mutating` only so that the model is passed by address; a non-mutating
    /// call there copies the whole model (288 bytes) to the stack first. The maps are
    /// looked up out of line (`tableRegionInPlace`), so that the common part does not
    /// load all three maps up front.
    @inline(never)
    public mutating func regionInPlace(at offset: UInt64) -> Region {
        let bits = UInt64(header.clusterBits) & 63
        if let fixed = fixedRegion(at: offset, bits: bits) { return fixed }
        let index = offset &>> bits
        if tableClusters.contains(index) { return tableRegionInPlace(cluster: index &<< bits, index: index) }
        if dataClusters.contains(index) { return .data }
        return .unreferenced
    }

    /// `region(at: offset)` is `.l2Table` (the active L1's or a snapshot's), by address.
    @inline(never)
    public mutating func isL2TableInPlace(at offset: UInt64) -> Bool {
        let bits = UInt64(header.clusterBits) & 63
        if fixedRegion(at: offset, bits: bits) != nil { return false }
        let index = offset &>> bits
        guard tableClusters.contains(index) else { return false }
        let cluster = index &<< bits
        return l2Tables[cluster] != nil || (!snapshotL2Tables.isEmpty && snapshotL2Tables[cluster] != nil)
    }

    @inline(never)
    private mutating func tableRegionInPlace(cluster: UInt64, index: UInt64) -> Region {
        tableRegion(cluster: cluster, index: index)
    }

    /// Whether a refcount block on disk describes this host cluster.
    public func isCovered(clusterOffset: UInt64) -> Bool {
        let index = reftableIndex(clusterOffset: clusterOffset)
        return index < UInt64(reftable.count) && reftable[Int(index)] & Qcow2Entry.offsetMask != 0
    }

    /// The refcount table index that covers a host cluster.
    public func reftableIndex(clusterOffset: UInt64) -> UInt64 {
        (clusterOffset >> UInt64(header.clusterBits)) / header.refblockEntries
    }

    /// Host cluster indices whose refcount goes from 0 to non-zero when `newContent`
    /// replaces the refblock at `block` (a whole-block write), excluding known metadata.
    public mutating func newlyReferencedClusters(block: UInt64, newContent: [UInt8], file: ImageReader) -> [UInt64] {
        guard newContent.count == Int(clusterSize), let index = refblocks[block],
              let old = refblockContent(block, file: file) else { return [] }
        var result: [UInt64] = []
        let bits = header.refcountBits
        var i: UInt64 = 0
        while i < header.refblockEntries {
            let cluster = index * header.refblockEntries + i
            if RefcountBlock.entry(newContent, i, bits: bits) != 0,
               RefcountBlock.entry(old, i, bits: bits) == 0 || releasedClusters.contains(cluster),
               case .unreferenced = region(at: cluster << UInt64(header.clusterBits)) {
                result.append(cluster)
                releasedClusters.remove(cluster)
            }
            i += 1
        }
        return result
    }

    /// The refcount of a host cluster as it is on disk; nil when no refblock covers it.
    public mutating func refcount(clusterOffset: UInt64, file: ImageReader) -> UInt64? {
        let index = reftableIndex(clusterOffset: clusterOffset)
        guard index < UInt64(reftable.count) else { return nil }
        let block = reftable[Int(index)] & Qcow2Entry.offsetMask
        guard block != 0, let b = refblockContent(block, file: file) else { return nil }
        let entry = (clusterOffset >> UInt64(header.clusterBits)) % header.refblockEntries
        return RefcountBlock.entry(b, entry, bits: header.refcountBits)
    }

    /// A refblock as it is on disk: learnt from the I/O, read from the file the first time.
    private mutating func refblockContent(_ block: UInt64, file: ImageReader) -> [UInt8]? {
        if let known = refblockData[block] { return known }
        guard let b = file.read(offset: block, count: Int(clusterSize)), b.count == Int(clusterSize) else { return nil }
        refblockData[block] = b
        return b
    }

    // MARK: Learning from I/O (both directions: what was read is what is on disk)

    /// Whether `learn(offset:data:)` of `length` bytes, `region` being `region(at: offset)`,
    /// could take anything in: not within a refblock whose content is not cached (a
    /// metadata walk reads thousands).
    @inline(__always)
    public func learnsFrom(_ region: Region, offset: UInt64, length: UInt64) -> Bool {
        guard case .refcountBlock(let block, _) = region, offset &- block &+ length <= clusterSize else { return true }
        return !refblockData.isEmpty && refblockData[block] != nil
    }

    /// Takes in data that is now on disk at `offset` (a completed write, or a read).
    public mutating func learn(offset: UInt64, data: [UInt8], file: ImageReader) {
        data.withUnsafeBytes { learn(offset: offset, data: $0, file: file) }
    }

    /// The same, from the bytes in place (the call's own buffer): no copies.
    public mutating func learn(offset: UInt64, data: UnsafeRawBufferPointer, file: ImageReader) {
        guard !data.isEmpty else { return }
        var pos = 0
        while pos < data.count {
            let at = offset + UInt64(pos)
            let chunkEnd = min(data.count, pos + Int(clusterSize - (at % clusterSize)))
            learnChunk(at: at, UnsafeRawBufferPointer(rebasing: data[pos..<chunkEnd]), file: file)
            pos = chunkEnd
        }
    }

    private mutating func learnChunk(at offset: UInt64, _ data: UnsafeRawBufferPointer, file: ImageReader) {
        switch region(at: offset) {
        case .header:
            learnHeader(at: offset, length: data.count, file: file)
        case .l1Table(let first):
            // An unused entry that stays unused changes nothing (most of a table read).
            for k in 0..<(data.count / 8) where Int(first) + k < l1.count && (offset % 8 == 0) {
                let entry = data.be64(at: k * 8), index = Int(first) + k
                if entry == 0 && l1[index] == 0 { continue }
                // Nor does a used one that is unchanged and already maps its table to this
                // index (qemu-img check reads the whole L1 again: one lookup, not four).
                if entry == l1[index], l1Owners[index >> 6] & (1 << UInt64(index & 63)) != 0 { continue }
                setL1(index: index, entry)
            }
        case .refcountTable(let first):
            guard offset % 8 == 0, Int(first) < reftable.count else { break }
            let n = min(data.count / 8, reftable.count - Int(first))
            var k = 0
            while k < n {
                // Skip the run of entries unused before and after in one tight scan: most
                // of a table read at open (8,192 entries of a 64 KiB table, ~0.2 M
                // instructions through the general loop; issue 7).
                k = reftable.withUnsafeBufferPointer { table in
                    var j = k
                    // Eight at a time with vector loads first (~1.5 instructions an entry,
                    // not ~6; issue 7, s8-7a), then four (n stays within the table:
                    // first + n <= its count).
                    if let t = table.baseAddress {
                        let entries = UnsafeRawPointer(t)
                        while j &+ 8 <= n {
                            let o = j &* 8, at = (Int(first) &+ j) &* 8
                            let v = data.loadUnaligned(fromByteOffset: o, as: SIMD4<UInt64>.self)
                                | data.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD4<UInt64>.self)
                                | entries.loadUnaligned(fromByteOffset: at, as: SIMD4<UInt64>.self)
                                | entries.loadUnaligned(fromByteOffset: at &+ 32, as: SIMD4<UInt64>.self)
                            let w = v.lowHalf | v.highHalf
                            if w[0] | w[1] != 0 { break }
                            j &+= 8
                        }
                    }
                    while j &+ 4 <= n {
                        let at = Int(first) &+ j, o = j &* 8
                        let z = data.loadUnaligned(fromByteOffset: o, as: UInt64.self)
                            | data.loadUnaligned(fromByteOffset: o &+ 8, as: UInt64.self)
                            | data.loadUnaligned(fromByteOffset: o &+ 16, as: UInt64.self)
                            | data.loadUnaligned(fromByteOffset: o &+ 24, as: UInt64.self)
                            | table[at] | table[at &+ 1] | table[at &+ 2] | table[at &+ 3]
                        if z != 0 { break }
                        j &+= 4
                    }
                    while j < n, data.loadUnaligned(fromByteOffset: j &* 8, as: UInt64.self) == 0, table[Int(first) &+ j] == 0 { j &+= 1 }
                    return j
                }
                guard k < n else { break }
                let entry = data.be64(at: k * 8), index = Int(first) + k
                k += 1
                // Nor a used one unchanged whose block maps to this index (the open reads the table again).
                if entry == reftable[index], refblocks[entry & Qcow2Entry.offsetMask] == UInt64(index) { continue }
                setReftable(index: index, entry)
            }
        case .l2Table:
            learnL2Entries(data)
        case .refcountBlock(let block, _):
            // Only a cached copy is kept current: one not cached is read from the file
            // when a refblock write needs it, and the file holds what was just read or
            // written. (Caching every refblock a metadata walk reads cost 4 KiB per
            // 4 KiB-cluster refblock: 55 MB for a 1 TiB image.)
            guard refblockData[block] != nil else { break }
            if data.count == Int(clusterSize) { refblockData[block] = Array(data) }
            else if var b = refblockContent(block, file: file) {
                let start = Int(offset - block)
                b.replaceSubrange(start..<min(b.count, start + data.count), with: data.prefix(b.count - start))
                refblockData[block] = b
            }
        case .data, .unreferenced:
            break
        }
    }

    private mutating func learnHeader(at offset: UInt64, length: Int, file: ImageReader) {
        // Re-read the fields that moved; QEMU rewrites the header in place.
        let touches: (UInt64, UInt64) -> Bool = { lo, hi in offset < hi && offset + UInt64(length) > lo }
        guard let b = file.read(offset: 0, count: Qcow2Header.readLength), let h = try? Qcow2Header(bytes: b) else { return }
        let oldL1 = (header.l1TableOffset, header.l1Size)
        let oldRT = (header.refcountTableOffset, header.refcountTableClusters)
        var newHeader = h
        newHeader.extensions = header.extensions
        // What `wholeDataWord` reads of the header (the tables' own moves reload them below).
        if (h.clusterBits, h.l1TableOffset, h.l1Size, h.refcountTableOffset, h.refcountTableClusters)
            != (header.clusterBits, header.l1TableOffset, header.l1Size, header.refcountTableOffset, header.refcountTableClusters) {
            layoutVersion &+= 1
        }
        header = newHeader
        if touches(36, 48), (h.l1TableOffset, h.l1Size) != oldL1 {
            release(offset: oldL1.0, bytes: UInt64(oldL1.1) * 8)
            try? loadL1(file)
        }
        if touches(48, 60), (h.refcountTableOffset, h.refcountTableClusters) != oldRT {
            release(offset: oldRT.0, bytes: UInt64(oldRT.1) * clusterSize)
            try? loadReftable(file)
        }
        // qcow2_write_snapshots: a new snapshot table (its entries are on disk already).
        if touches(60, 72) { loadSnapshotL2Tables(file) }
    }

    mutating func setL1(index: Int, _ entry: UInt64) {
        let old = l1[index] & Qcow2Entry.offsetMask
        if old != 0, l2Tables[old] == UInt64(index) { l2Tables[old] = nil }
        l1[index] = entry
        Self.clear(&l1Owners, index)
        let new = entry & Qcow2Entry.offsetMask
        if new != 0 {
            // The table's previous owner (another entry naming it) is one no more.
            if let previous = l2Tables.updateValue(UInt64(index), forKey: new) { Self.clear(&l1Owners, Int(previous)) }
            Self.set(&l1Owners, index)
        }
        markTable(old); markTable(new)
    }

    mutating func setReftable(index: Int, _ entry: UInt64) {
        let old = reftable[index] & Qcow2Entry.offsetMask
        if old != 0 { refblocks[old] = nil; refblockData[old] = nil }
        reftable[index] = entry
        let new = entry & Qcow2Entry.offsetMask
        if new != 0 { refblocks[new] = UInt64(index) }
        markTable(old); markTable(new)
    }

    /// Keeps `tableClusters` equal to the clusters of `l2Tables` and `refblocks`.
    private mutating func markTable(_ cluster: UInt64) {
        guard cluster != 0 else { return }
        let index = cluster >> UInt64(header.clusterBits)
        if l2Tables[cluster] != nil || snapshotL2Tables[cluster] != nil || refblocks[cluster] != nil {
            if tableClusters.insert(index) { layoutVersion &+= 1 }
        } else {
            tableClusters.remove(index)
        }
    }

    private mutating func rebuildTableClusters() {
        layoutVersion &+= 1
        tableClusters.removeAll()
        // Sized once for the last table (growing with each insert copied the bitmap over and over).
        var last: UInt64 = 0
        for map in [l2Tables, snapshotL2Tables, refblocks] { map.forEachKey { last = max(last, $0) } }
        if last != 0 { tableClusters.reserve(upTo: last >> UInt64(header.clusterBits)) }
        l2Tables.forEachKey { tableClusters.insert($0 >> UInt64(header.clusterBits)) }
        snapshotL2Tables.forEachKey { tableClusters.insert($0 >> UInt64(header.clusterBits)) }
        refblocks.forEachKey { tableClusters.insert($0 >> UInt64(header.clusterBits)) }
    }

    /// An L2 slice read (`region(at: offset)` is an L2 table): learns it and returns
    /// `hasAllocationBoundary(data)`, in one pass when the slice lies in one cluster.
    public mutating func learnL2Read(offset: UInt64, data: UnsafeRawBufferPointer, file: ImageReader) -> Bool {
        learnL2Read(offset: offset, region: region(at: offset), data: data, file: file)
    }

    /// The same, for a caller that looked `region(at: offset)` up already (it hashes).
    public mutating func learnL2Read(offset: UInt64, region: Region, data: UnsafeRawBufferPointer, file: ImageReader) -> Bool {
        guard case .l2Table = region, UInt64(data.count) <= clusterSize - offset % clusterSize else {
            let boundary = hasAllocationBoundary(data)
            learn(offset: offset, data: data, file: file)
            return boundary
        }
        if !dataClusters.hasBitmap { presizeDataClusters() }
        return learnL2Entries(data)
    }

    /// Bitmap words `presizeDataClusters` allocates at most (1 MiB: 8 Mi clusters, 512 GiB
    /// of 64 KiB clusters); larger images grow it as their tables are learnt.
    static let presizeWords: UInt64 = 1 << 17

    /// Before the first L2 table is learnt: the data bitmap sized for the guest's clusters
    /// (up to `presizeWords`). Grown from empty, the first tables stop the fast loop at
    /// each run past the bitmap, copy it as it doubles, and scan their entries again.
    private mutating func presizeDataClusters() {
        let clusters = header.size >> UInt64(header.clusterBits)
        guard clusters > 0 else { return }
        dataClusters.reserve(upTo: min(clusters - 1, Self.presizeWords * 64 - 1))
    }

    /// Learns the entries of an L2 slice; returns `hasAllocationBoundary(raw)`.
    /// (qemu-img check reads every L2 table: this loop is most of blkfault's cost there.)
    @discardableResult
    private mutating func learnL2Entries(_ raw: UnsafeRawBufferPointer) -> Bool {
        let step = Int(header.l2EntrySize), shift = UInt64(header.clusterBits) & 63
        guard let base = raw.baseAddress, raw.count >= 8 else { return false }
        let n = (raw.count - 8) / step + 1
        // The common entries straight into the bitmap's words; it stops at the first entry
        // that needs more (compressed, or a cluster past the bitmap: it grows). A constant
        // stride (8: standard entries; 16: extended L2) keeps the loop tight.
        var start = 0, resumed = false
        // The flags of each run's first entry or-ed together (a run shares its flags):
        // bit 0 set means some entry has the zero flag, learned apart below.
        var runFlags: UInt64 = 0
        defer { if runFlags & Qcow2Entry.zeroFlag != 0 { learnZeroFlags(raw, n: n, step: step, shift: shift) } }
        while true {
            let from = base + start * step, left = n - start
            let (stop, fastBoundary, needed) = dataClusters.withWords { words, added -> (Int, Bool, UInt64) in
                step == 8 ? Self.setDataBits(from, left, stride: 8, shift: shift, words, &added, &runFlags)
                          : Self.setDataBits(from, left, stride: 16, shift: shift, words, &added, &runFlags)
            }
            if stop == left { return resumed ? hasAllocationBoundary(raw) : fastBoundary }
            start += stop
            // A run past the bitmap: grow it to hold the run (geometrically) and go on from
            // the run's first entry; the boundary is then scanned apart.
            guard needed != 0, needed <= ClusterSet.bitmapLimit else { break }
            dataClusters.reserve(upTo: needed - 1)
            resumed = true
        }
        let stop = start
        // The rest one entry at a time, on a local copy moved out of self (one uniqueness check).
        var known = dataClusters
        dataClusters = ClusterSet()
        var compressed: [UInt64] = []
        for i in stop..<n {
            let e = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: i * step, as: UInt64.self))
            runFlags |= e
            if e & Qcow2Entry.compressed != 0 {
                compressed.append(e)
            } else if case let host = e & Qcow2Entry.offsetMask, host != 0 {
                known.insert(host >> shift)
            }
        }
        dataClusters = known
        for e in compressed { learnCompressedEntry(e) }
        return hasAllocationBoundary(raw)
    }

    /// The fast loop of `learnL2Entries`: returns where it stopped (n: at the end); if at
    /// the end, whether an allocated entry is followed by an unallocated one; if stopped at
    /// a run past the bitmap, the end of that run's cluster indices (else 0).
    /// Entries pointing to consecutive clusters (a preallocated, converted or sequentially
    /// written image) form runs: `runEnd` finds where a run stops, four entries per
    /// compare, and the run's bits are set word by word.
    @inline(__always)
    private static func setDataBits(_ base: UnsafeRawPointer, _ n: Int, stride: Int, shift: UInt64,
                                    _ words: UnsafeMutableBufferPointer<UInt64>, _ added: inout Int,
                                    _ runFlags: inout UInt64) -> (Int, Bool, UInt64) {
        let limit = UInt64(words.count) &<< 6, clusterSize: UInt64 = 1 &<< shift
        var boundary = false, previousAllocated = false
        var i = 0
        while i < n {
            let e = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: i &* stride, as: UInt64.self))
            i &+= 1
            if e & Qcow2Entry.compressed != 0 { return (i &- 1, false, 0) }
            let host = e & Qcow2Entry.offsetMask
            if host == 0 {
                boundary = boundary || previousAllocated
                previousAllocated = false
                // The entries after it that are neither compressed nor allocated (holes,
                // zero-flagged holes: the same as this one, nothing to learn), four per
                // test on the raw big-endian words (most of a sparse table: ~23
                // instructions each one at a time).
                let unallocated = (Qcow2Entry.compressed | Qcow2Entry.offsetMask).bigEndian
                while i &+ 4 <= n {
                    let z = base.loadUnaligned(fromByteOffset: i &* stride, as: UInt64.self)
                        | base.loadUnaligned(fromByteOffset: (i &+ 1) &* stride, as: UInt64.self)
                        | base.loadUnaligned(fromByteOffset: (i &+ 2) &* stride, as: UInt64.self)
                        | base.loadUnaligned(fromByteOffset: (i &+ 3) &* stride, as: UInt64.self)
                    if z & unallocated != 0 { break }
                    i &+= 4
                }
                continue
            }
            // This entry and the ones after it that point to the next clusters, each equal
            // to the one before plus a cluster (flags included).
            runFlags |= e
            let end = runEnd(base, from: i, n, stride: stride, expected: e &+ clusterSize, clusterSize: clusterSize)
            let runStart = host &>> shift, runLength = UInt64(truncatingIfNeeded: end &- i &+ 1)
            // Below the limit (< 2^27 clusters), adding clusters never carried past the offset bits.
            if runStart &+ runLength > limit { return (i &- 1, false, runStart &+ runLength) }
            added &+= setRange(words, runStart, runLength)
            previousAllocated = true
            i = end
        }
        return (n, boundary, 0)
    }

    /// The first index from `i` on whose entry is not `expected` plus a cluster per step
    /// (n if none): four entries per step, their differences or-ed into one compare.
    @inline(__always)
    private static func runEnd(_ base: UnsafeRawPointer, from i: Int, _ n: Int, stride: Int,
                               expected: UInt64, clusterSize: UInt64) -> Int {
        var j = i, x = expected
        @inline(__always) func entry(_ k: Int) -> UInt64 {
            UInt64(bigEndian: base.loadUnaligned(fromByteOffset: k &* stride, as: UInt64.self))
        }
        while j &+ 4 <= n {
            let d = (entry(j) ^ x) | (entry(j &+ 1) ^ (x &+ clusterSize))
                | (entry(j &+ 2) ^ (x &+ 2 &* clusterSize)) | (entry(j &+ 3) ^ (x &+ 3 &* clusterSize))
            if d != 0 { break }
            x &+= 4 &* clusterSize; j &+= 4
        }
        while j < n && entry(j) == x { x &+= clusterSize; j &+= 1 }
        return j
    }

    /// Sets the bits of indices start..<start+length (inside `words`); returns how many were clear.
    /// (Not inlined: once per run, and its constants would take the run loop's registers.)
    @inline(never)
    private static func setRange(_ words: UnsafeMutableBufferPointer<UInt64>, _ start: UInt64, _ length: UInt64) -> Int {
        var newlySet = 0, index = start, left = length
        while left > 0 {
            let b = index & 63, take = min(64 &- b, left)
            let mask: UInt64 = (take == 64 ? ~0 : (1 &<< take) &- 1) &<< b
            let w = Int(truncatingIfNeeded: index &>> 6)
            let old = words[w]
            words[w] = old | mask
            newlySet &+= (mask & ~old).nonzeroBitCount
            index &+= take; left &-= take
        }
        return newlySet
    }

    /// A compressed cluster descriptor (notes §4.6): the host byte offset in the low
    /// 62 − (cluster_bits − 8) bits, then the number of 512-byte sectors minus one.
    private mutating func learnCompressedEntry(_ e: UInt64) {
        let shift = UInt64(62 - (header.clusterBits - 8))
        let host = e & ((1 << shift) - 1)
        let sectors = ((e >> shift) & ((1 << UInt64(header.clusterBits - 8)) - 1)) + 1
        guard host != 0 else { return }
        let end = (host & ~511) + sectors * 512
        var c = host >> UInt64(header.clusterBits)
        while c << UInt64(header.clusterBits) < end && c - (host >> UInt64(header.clusterBits)) < 4 {
            compressedClusters.insert(c); c += 1
        }
    }

    /// Whether the byte at `offset` lies in a cluster that holds compressed data.
    public func holdsCompressedData(_ offset: UInt64) -> Bool {
        !compressedClusters.isEmpty && compressedClusters.contains(offset >> UInt64(header.clusterBits))
    }

    /// The L2 entries of a slice we read or wrote: whether any allocated cluster is
    /// followed by an unallocated one (a write starting there would allocate
    /// contiguously, without `cluster_alloc`).
    public func hasAllocationBoundary(_ data: [UInt8]) -> Bool {
        data.withUnsafeBytes { hasAllocationBoundary($0) }
    }

    public func hasAllocationBoundary(_ data: UnsafeRawBufferPointer) -> Bool {
        let step = Int(header.l2EntrySize)
        var previousAllocated = false
        var k = 0
        while k + 8 <= data.count {
            let allocated = UInt64(bigEndian: data.loadUnaligned(fromByteOffset: k, as: UInt64.self)) & Qcow2Entry.offsetMask != 0
            if previousAllocated && !allocated { return true }
            previousAllocated = allocated
            k += step
        }
        return false
    }

    /// A data cluster was freed.
    /// The zero flags of a slice's entries (standard entries: extended L2 entries keep
    /// theirs in the subcluster bitmap). Runs only for a slice with a zero-flagged entry;
    /// a flag is forgotten when a write or a discard reaches its cluster.
    private mutating func learnZeroFlags(_ raw: UnsafeRawBufferPointer, n: Int, step: Int, shift: UInt64) {
        guard step == 8, let base = raw.baseAddress else { return }
        for i in 0..<n {
            let e = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: i * step, as: UInt64.self))
            guard e & Qcow2Entry.compressed == 0, case let host = e & Qcow2Entry.offsetMask, host != 0 else { continue }
            if e & Qcow2Entry.zeroFlag != 0 { _ = zeroFlagClusters.insert(host >> shift) }
            else if zeroFlagClusters.count != 0 { zeroFlagClusters.remove(host >> shift) }
        }
    }

    /// A write into a zero-flagged cluster: QEMU clears the flag in its cached entry.
    /// Returns whether one of the clusters had it.
    public mutating func clearZeroFlags(offset: UInt64, length: UInt64) -> Bool {
        guard zeroFlagClusters.count != 0, length > 0 else { return false }
        let shift = UInt64(header.clusterBits)
        var had = false
        for c in (offset >> shift)...((offset + length - 1) >> shift) {
            if zeroFlagClusters.contains(c) { zeroFlagClusters.remove(c); had = true }
        }
        return had
    }

    public mutating func forgetData(clusterOffset: UInt64) {
        let index = clusterOffset >> UInt64(header.clusterBits)
        if dataClusters.contains(index) { dataClusters.remove(index); layoutVersion &+= 1 }
        if zeroFlagClusters.count != 0 { zeroFlagClusters.remove(index) }
        releasedClusters.insert(index)
    }

    private mutating func release(offset: UInt64, bytes: UInt64) {
        var c = offset >> UInt64(header.clusterBits)
        // Saturating: the old table's offset came from the file and may be anything.
        let last = offset.addingReportingOverflow(bytes).partialValue.addingReportingOverflow(clusterSize - 1)
        let end = (last.overflow || offset.addingReportingOverflow(bytes).overflow ? UInt64.max : last.partialValue) >> UInt64(header.clusterBits)
        while c < end && releasedClusters.count < 1 << 20 { releasedClusters.insert(c); c += 1 }
    }
}

extension ShadowImage {
    /// Clusters 64*w ... 64*w+63 whose every byte is guest data (`region(at:)` is `.data`
    /// throughout: an L2 entry points to it, and it is not the header, a table cluster, or
    /// part of the L1 or refcount table), one bit each.
    @inline(__always)  // (called from a mutating context, the model would be copied first)
    public func wholeDataWord(_ w: UInt64) -> UInt64 {
        var bits = dataClusters.word(w) & ~tableClusters.word(w)
        guard bits != 0 else { return 0 }
        return Self.clearingTables(bits, word: w, shift: UInt64(header.clusterBits), clusterSize: clusterSize,
                                   l1: (header.l1TableOffset, UInt64(l1.count) * 8),
                                   reftable: (header.refcountTableOffset, header.refcountTableSize))
    }

    /// `bits` (clusters 64*w ...) without the header cluster and the L1 and refcount tables'
    /// clusters. Static, given the fields: as a method, its closure captured the model and
    /// the caller copied the header to the stack on every call, `bits` 0 or not.
    @inline(never)
    static func clearingTables(_ bits: UInt64, word w: UInt64, shift: UInt64, clusterSize: UInt64,
                               l1: (UInt64, UInt64), reftable: (UInt64, UInt64)) -> UInt64 {
        var bits = bits
        func clear(_ start: UInt64, _ length: UInt64) {
            guard length > 0 else { return }
            let first = start >> shift
            let last = (start.addingReportingOverflow(length - 1).overflow ? UInt64.max : start + length - 1) >> shift
            guard last >= w << 6, first <= (w << 6) | 63 else { return }
            for c in max(first, w << 6)...min(last, (w << 6) | 63) { bits &= ~(1 << (c & 63)) }
        }
        clear(0, clusterSize)
        clear(l1.0, l1.1)
        clear(reftable.0, reftable.1)
        return bits
    }
}
