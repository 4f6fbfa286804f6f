/// What every byte range of a qcow2 file is: the walker behind `blkfault map`.
///
/// `Qcow2Layout.scan` reads the header, the header extensions, the active L1 and
/// its L2 tables, the refcount table and its refcount blocks, the snapshot table
/// (and the snapshots' own L1/L2 tables) and the bitmap directory, then sweeps
/// the refcounts to find free clusters (refcount 0) and leaked ones (refcounted,
/// referenced by nothing). Standard library only.
///
/// Hostile or truncated images never crash or hang the walker: every offset and
/// size is bounds-checked, every loop is capped (`Limits`), and anything odd is
/// reported in `warnings` instead of being thrown. Only a file that is not a
/// qcow2 image at all (too short, bad magic, a header QEMU would refuse) throws.
/// Memory is proportional to the image's metadata, never to its file size.
public struct Qcow2Layout: Sendable {
    /// What a region is.
    public enum Kind: String, Sendable, CaseIterable, Hashable {
        case header
        case headerExtension = "header extension"
        case backingFileName = "backing file name"
        case encryptionHeader = "encryption header"
        case l1Table = "L1 table"
        case l2Table = "L2 table"
        case refcountTable = "refcount table"
        case refcountBlock = "refcount block"
        case snapshotTable = "snapshot table"
        case snapshotL1Table = "snapshot L1 table"
        case bitmapDirectory = "bitmap directory"
        case bitmapTable = "bitmap table"
        case bitmapData = "bitmap data"
        /// Guest data clusters (a run: host- and guest-contiguous).
        case data
        /// Preallocated zero clusters: allocated, but read as zeroes (L2 bit 0).
        case zeroData = "preallocated zero data"
        /// Data in the VM state area (L1 index past the disk).
        case vmstate = "vmstate data"
        /// Compressed guest clusters: a byte range, not cluster aligned.
        case compressed = "compressed data"
        /// Clusters inside the file with refcount 0 that nothing references.
        case free
        /// Clusters with a refcount that nothing references (qemu-img check's "leaked").
        case leaked

        /// True for the tables and structures QEMU keeps about the image.
        public var isMetadata: Bool {
            switch self {
            case .data, .zeroData, .vmstate, .compressed, .bitmapData, .free, .leaked: return false
            default: return true
            }
        }
    }

    /// One byte range of the file.
    public struct Region: Sendable, Equatable {
        public var offset: UInt64
        public var length: UInt64
        public var kind: Kind
        /// L2 table: its L1 index. Refcount block: its refcount table index.
        /// Bitmap table/data: the bitmap's directory index. Snapshot L1 table: unused (see `snapshot`).
        public var index: Int?
        /// Data, zero data, compressed data: the guest offset of the first byte.
        /// vmstate: the offset inside the VM state area.
        public var guestOffset: UInt64?
        /// Set when only a snapshot (0-based, in snapshot table order) references the region.
        public var snapshot: Int?
        /// Header extensions: the extension type.
        public var extensionType: UInt32?

        public init(offset: UInt64, length: UInt64, kind: Kind, index: Int? = nil,
                    guestOffset: UInt64? = nil, snapshot: Int? = nil, extensionType: UInt32? = nil) {
            self.offset = offset; self.length = length; self.kind = kind; self.index = index
            self.guestOffset = guestOffset; self.snapshot = snapshot; self.extensionType = extensionType
        }

        public var end: UInt64 { offset &+ length }
    }

    /// Caps on the work done, so a hostile image cannot make the walk take forever.
    public struct Limits: Sendable {
        /// Metadata bytes read in all (tables, directories); past it the walk stops reading.
        public var maxMetadataBytes: UInt64 = 1 << 29
        /// Clusters whose refcount is examined one by one in the free/leak sweep.
        public var maxSweptClusters: UInt64 = 1 << 26
        /// Regions kept; past it data runs are counted but not listed.
        public var maxRegions: Int = 1 << 21
        /// Warnings kept; the rest are counted.
        public var maxWarnings: Int = 64
        /// Snapshots walked (QEMU's own limit is 65536).
        public var maxSnapshots: Int = 65536
        /// Bitmaps walked (QEMU's own limit is 65535).
        public var maxBitmaps: Int = 65535
        public init() {}
    }

    /// Totals, in clusters unless the name says bytes.
    public struct Counts: Sendable, Equatable {
        /// Clusters the file spans (the last one may be partial).
        public var fileClusters: UInt64 = 0
        public var l2Tables = 0
        public var refcountBlocks = 0
        public var snapshots = 0
        public var bitmaps = 0
        /// Guest data clusters referenced by the active L1 (standard, allocated; zero ones included).
        public var dataClusters: UInt64 = 0
        /// Of which preallocated zero clusters.
        public var zeroClusters: UInt64 = 0
        public var vmstateClusters: UInt64 = 0
        /// Compressed L2 entries (guest clusters) and the host bytes they take.
        public var compressedClusters: UInt64 = 0
        public var compressedBytes: UInt64 = 0
        /// Data clusters referenced only by snapshots.
        public var snapshotOnlyDataClusters: UInt64 = 0
        /// Data clusters that live in an external data file (not in this file).
        public var externalDataClusters: UInt64 = 0
        public var bitmapDataClusters: UInt64 = 0
        /// Host clusters with refcount 0 inside the file, referenced by nothing.
        public var freeClusters: UInt64 = 0
        /// Host clusters with a refcount, referenced by nothing.
        public var leakedClusters: UInt64 = 0
        /// Host clusters referenced by something but with refcount 0 on disk.
        public var unrefcountedClusters: UInt64 = 0
        /// Host clusters with a refcount (inside the file).
        public var refcountedClusters: UInt64 = 0
        /// Host clusters something references (inside the file).
        public var referencedClusters: UInt64 = 0
        /// True when the free/leak sweep covered the whole file.
        public var sweepComplete = true
        public init() {}
    }

    public let header: Qcow2Header
    public let fileSize: UInt64
    /// Every region, sorted by offset (referenced structures first where two start together).
    public let regions: [Region]
    /// Problems found, most important first within each phase; at most `Limits.maxWarnings`
    /// plus one line counting the rest.
    public let warnings: [String]
    public let counts: Counts

    public var clusterSize: UInt64 { header.clusterSize }

    /// Walks the image. `read(offset, length)` returns the bytes at `offset` (fewer at the end
    /// of the file, which count as zeroes) or nil if they cannot be read.
    public static func scan(fileSize: UInt64, limits: Limits = Limits(),
                            read: (UInt64, Int) -> [UInt8]?) throws(Qcow2Error) -> Qcow2Layout {
        let result: Result<Qcow2Layout, Qcow2Error> = withoutActuallyEscaping(read) { read in
            var walker = Walker(fileSize: fileSize, limits: limits, read: read)
            do throws(Qcow2Error) {
                return .success(try walker.run())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// The regions of one kind.
    public func regions(_ kind: Kind) -> [Region] { regions.filter { $0.kind == kind } }
}

// MARK: - The walk

private struct Walker {
    let fileSize: UInt64
    let limits: Qcow2Layout.Limits
    let read: (UInt64, Int) -> [UInt8]?

    var header: Qcow2Header! = nil
    var regions: [Qcow2Layout.Region] = []
    var warnings: [String] = []
    var droppedWarnings = 0
    var counts = Qcow2Layout.Counts()
    var metadataRead: UInt64 = 0
    var budgetExhausted = false
    var regionsDropped = 0
    /// L2 tables already walked (by host offset): sharing between snapshots is normal.
    var visitedL2: Set<UInt64> = []
    /// Data clusters referenced so far; kept only when snapshots exist (they share clusters).
    var referencedData: Set<UInt64>? = nil
    /// Refcount blocks found in the refcount table: (reftable index, offset).
    var refblocks: [(index: Int, offset: UInt64)] = []

    init(fileSize: UInt64, limits: Qcow2Layout.Limits, read: @escaping (UInt64, Int) -> [UInt8]?) {
        self.fileSize = fileSize; self.limits = limits; self.read = read
    }

    var clusterSize: UInt64 { header.clusterSize }
    var clusterBits: UInt64 { UInt64(header.clusterBits) }

    // MARK: helpers

    mutating func warn(_ message: String) {
        if warnings.count < limits.maxWarnings { warnings.append(message) } else { droppedWarnings += 1 }
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    func isAligned(_ v: UInt64) -> Bool { v & (clusterSize - 1) == 0 }

    mutating func add(_ r: Qcow2Layout.Region) {
        if regions.count >= limits.maxRegions {
            if regionsDropped == 0 { warn("more than \(limits.maxRegions) regions: the rest are counted, not listed") }
            regionsDropped += 1
            return
        }
        regions.append(r)
    }

    /// Adds a data-like region, extending the previous one when host and guest are both contiguous.
    mutating func addRun(_ r: Qcow2Layout.Region) {
        if let last = regions.last, last.kind == r.kind, last.snapshot == r.snapshot, last.index == r.index,
           last.end == r.offset, let lg = last.guestOffset, let g = r.guestOffset, lg &+ last.length == g {
            regions[regions.count - 1].length += r.length
            return
        }
        add(r)
    }

    /// Reads metadata: checks bounds against the file, counts against the budget, zero-pads
    /// a short read at the end of the file. Nil (with a warning) when it cannot be read.
    mutating func readMetadata(_ offset: UInt64, _ length: UInt64, _ what: @autoclosure () -> String) -> [UInt8]? {
        guard length > 0 else { return [] }
        if budgetExhausted { return nil }
        guard offset < fileSize else {
            warn("\(what()) at \(Self.hex(offset)) lies past the end of the file (\(fileSize) bytes)")
            return nil
        }
        guard length <= limits.maxMetadataBytes, metadataRead + length <= limits.maxMetadataBytes else {
            budgetExhausted = true
            warn("stopped reading metadata after \(metadataRead) bytes (limit \(limits.maxMetadataBytes)): the map is incomplete")
            return nil
        }
        metadataRead += length
        let available = min(length, fileSize - offset)
        if available < length {
            warn("\(what()) at \(Self.hex(offset)) is cut short by the end of the file (\(available) of \(length) bytes)")
        }
        guard var bytes = read(offset, Int(available)) else {
            warn("could not read \(what()) at \(Self.hex(offset))")
            return nil
        }
        if bytes.count > Int(length) { bytes.removeLast(bytes.count - Int(length)) }
        if bytes.count < Int(length) { bytes.append(contentsOf: repeatElement(0, count: Int(length) - bytes.count)) }
        return bytes
    }

    // MARK: run

    mutating func run() throws(Qcow2Error) -> Qcow2Layout {
        guard fileSize >= 72 else { throw .tooShort(Int(fileSize)) }
        let headLength = Int(min(fileSize, UInt64(Qcow2Header.readLength)))
        guard let head = read(0, headLength), head.count >= 72 else { throw .truncated("the qcow2 header") }
        var h = try Qcow2Header(bytes: head)
        let cluster0Length = Int(min(fileSize, h.clusterSize))
        if let cluster0 = read(0, cluster0Length) { h.parseExtensions(cluster0: cluster0) }
        header = h
        metadataRead = UInt64(cluster0Length)
        counts.fileClusters = (fileSize >> clusterBits) + (fileSize & (clusterSize - 1) == 0 ? 0 : 1)

        scanHeaderCluster()
        scanRefcountTable()
        if header.nbSnapshots > 0 { referencedData = [] }
        scanL1(offset: header.l1TableOffset, size: UInt64(header.l1Size), snapshot: nil)
        scanSnapshots()
        scanBitmaps()
        sweep()

        if droppedWarnings > 0 { warnings.append("... and \(droppedWarnings) more problems not shown") }
        return Qcow2Layout(header: header, fileSize: fileSize, regions: regions, warnings: warnings, counts: counts)
    }

    // MARK: header cluster

    mutating func scanHeaderCluster() {
        let h = header!
        let headerLength = UInt64(h.version == 2 ? 72 : h.headerLength)
        add(.init(offset: 0, length: min(headerLength, fileSize), kind: .header))
        if h.incompatibleFeatures & 1 != 0 {
            warn("the image is marked dirty (incompatible bit 0): refcounts on disk may be stale")
        }
        if h.incompatibleFeatures & 2 != 0 { warn("the image is marked corrupt (incompatible bit 1)") }
        let unknownIncompatible = h.incompatibleFeatures & ~UInt64(0x1f)
        if unknownIncompatible != 0 {
            warn("unknown incompatible feature bits \(Self.hex(unknownIncompatible)): QEMU would refuse this image")
        }
        for ext in h.extensions {
            let start = ext.dataOffset - 8
            let padded = (UInt64(ext.length) + 7) / 8 * 8
            add(.init(offset: start, length: 8 + padded, kind: .headerExtension, extensionType: ext.type))
            if ext.type == Qcow2HeaderExtension.fullDiskEncryption {
                scanEncryptionExtension(ext)
            }
        }
        if h.backingFileOffset != 0 || h.backingFileSize != 0 {
            let off = h.backingFileOffset, len = UInt64(h.backingFileSize)
            if len > 1023 {
                warn("backing file name is \(len) bytes long (QEMU's limit is 1023)")
            }
            if off >= fileSize || len > fileSize - off {
                warn("backing file name at \(Self.hex(off)) (\(len) bytes) lies past the end of the file")
            } else if off + len > clusterSize {
                warn("backing file name at \(Self.hex(off)) does not fit in the first cluster")
                add(.init(offset: off, length: len, kind: .backingFileName))
            } else {
                add(.init(offset: off, length: len, kind: .backingFileName))
            }
        }
    }

    mutating func scanEncryptionExtension(_ ext: Qcow2HeaderExtension) {
        guard ext.length >= 16, let b = read(ext.dataOffset, 16), b.count == 16 else {
            warn("full disk encryption extension is too short (\(ext.length) bytes)")
            return
        }
        let off = b.be64(at: 0), len = b.be64(at: 8)
        guard off < fileSize, len <= fileSize - off else {
            warn("encryption header at \(Self.hex(off)) (\(len) bytes) lies past the end of the file")
            return
        }
        if !isAligned(off) { warn("encryption header at \(Self.hex(off)) is not cluster aligned") }
        add(.init(offset: off, length: len, kind: .encryptionHeader))
    }

    // MARK: refcounts

    mutating func scanRefcountTable() {
        let off = header.refcountTableOffset, size = header.refcountTableSize
        guard size > 0 else {
            warn("the refcount table is empty (refcount_table_clusters = 0)")
            return
        }
        guard isAligned(off), off != 0 else {
            warn("refcount table offset \(Self.hex(off)) is not cluster aligned (or 0)")
            return
        }
        guard let table = readMetadata(off, size, "refcount table") else { return }
        add(.init(offset: off, length: size, kind: .refcountTable))
        let entries = Int(size / 8)
        var seen: Set<UInt64> = []
        for i in 0..<entries {
            let e = table.be64(at: i * 8)
            let rb = e & ~UInt64(0x1ff)
            if e & 0x1ff != 0 { warn("refcount table entry \(i) has reserved bits set (\(Self.hex(e)))") }
            if rb == 0 { continue }
            guard isAligned(rb) else {
                warn("refcount block \(i) at \(Self.hex(rb)) is not cluster aligned")
                continue
            }
            guard rb < fileSize else {
                warn("refcount block \(i) at \(Self.hex(rb)) lies past the end of the file (\(fileSize) bytes)")
                continue
            }
            guard seen.insert(rb).inserted else {
                warn("refcount block \(i) at \(Self.hex(rb)) is used by another refcount table entry too")
                continue
            }
            refblocks.append((i, rb))
            add(.init(offset: rb, length: clusterSize, kind: .refcountBlock, index: i))
        }
        counts.refcountBlocks = refblocks.count
    }

    /// The refcount of entry `k` of a refcount block.
    func refcount(_ block: [UInt8], _ k: UInt64) -> UInt64 {
        RefcountBlock.entry(block, k, bits: header.refcountBits)
    }

    // MARK: L1 / L2

    /// Walks an L1 table (the active one when `snapshot` is nil) and the L2 tables it points to.
    mutating func scanL1(offset: UInt64, size: UInt64, snapshot: Int?) {
        let what = snapshot.map { "L1 table of snapshot \($0 + 1)" } ?? "L1 table"
        guard size > 0 else { return }
        guard size * 8 <= 32 << 20 else {
            warn("\(what) has \(size) entries (QEMU's limit is \((32 << 20) / 8))")
            return
        }
        guard offset != 0, isAligned(offset) else {
            warn("\(what) offset \(Self.hex(offset)) is not cluster aligned (or 0)")
            return
        }
        guard let l1 = readMetadata(offset, size * 8, what) else { return }
        if let s = snapshot {
            add(.init(offset: offset, length: size * 8, kind: .snapshotL1Table, snapshot: s))
        } else {
            add(.init(offset: offset, length: size * 8, kind: .l1Table))
        }
        let vmIndex = header.vmStateL1Index
        var reservedWarned = false
        for i in 0..<Int(size) {
            if budgetExhausted { return }
            let e = l1.be64(at: i * 8)
            if e & ~(Qcow2Entry.offsetMask | Qcow2Entry.copied) != 0, !reservedWarned {
                warn("\(what) entry \(i) has reserved bits set (\(Self.hex(e)))")
                reservedWarned = true
            }
            let l2 = e & Qcow2Entry.offsetMask
            if l2 == 0 { continue }
            guard isAligned(l2) else {
                warn("\(what) entry \(i): L2 table at \(Self.hex(l2)) is not cluster aligned")
                continue
            }
            guard l2 < fileSize else {
                warn("\(what) entry \(i): L2 table at \(Self.hex(l2)) lies past the end of the file (\(fileSize) bytes)")
                continue
            }
            guard visitedL2.insert(l2).inserted else {
                // Snapshots share L2 tables with the active image and each other; the active L1 never does.
                if snapshot == nil { warn("L1 entries share the L2 table at \(Self.hex(l2)) (entry \(i))") }
                continue
            }
            add(.init(offset: l2, length: clusterSize, kind: .l2Table, index: i, snapshot: snapshot))
            counts.l2Tables += 1
            scanL2(at: l2, l1Index: UInt64(i), vmstate: UInt64(i) >= vmIndex, snapshot: snapshot)
        }
    }

    mutating func scanL2(at l2: UInt64, l1Index: UInt64, vmstate: Bool, snapshot: Int?) {
        let what = "L2 table (L1 index \(l1Index))"
        guard let table = readMetadata(l2, clusterSize, what) else { return }
        let h = header!
        let entrySize = Int(h.l2EntrySize), n = Int(h.l2Entries)
        let base = l1Index &* h.bytesPerL1Entry
        let vmBase = h.vmStateL1Index &* h.bytesPerL1Entry
        // Compressed descriptor: host offset in bits 0..<x, extra sectors in x...61.
        let x = 62 - (UInt64(h.clusterBits) - 8)
        let offsetMaskC: UInt64 = (1 << x) - 1
        let sectorMask: UInt64 = (1 << (62 - x)) - 1
        var problems = 0
        for j in 0..<n {
            let e = table.be64(at: j * entrySize)
            if e == 0 { continue }
            let guest = base &+ UInt64(j) &* clusterSize
            let shownOffset = vmstate ? guest &- vmBase : guest
            if e & Qcow2Entry.compressed != 0 {
                if h.hasExternalDataFile {
                    problems += 1; if problems == 1 { warn("\(what) has compressed entries but the image uses an external data file") }
                    continue
                }
                let coff = e & offsetMaskC
                let sectors = ((e >> x) & sectorMask) + 1
                let csize = sectors * 512 - (coff & 511)
                if snapshot != nil, referencedData?.insert(coff | (1 << 63)).inserted == false { continue }
                guard coff < fileSize else {
                    problems += 1
                    if problems <= 3 { warn("\(what) entry \(j): compressed data at \(Self.hex(coff)) lies past the end of the file") }
                    continue
                }
                if snapshot == nil {
                    counts.compressedClusters += 1
                    counts.compressedBytes += csize
                    _ = referencedData?.insert(coff | (1 << 63))
                } else {
                    counts.snapshotOnlyDataClusters += 1
                }
                addRun(.init(offset: coff, length: csize, kind: .compressed, guestOffset: shownOffset, snapshot: snapshot))
                continue
            }
            let host = e & Qcow2Entry.offsetMask
            let zero = h.extendedL2 ? false : (e & Qcow2Entry.zeroFlag != 0)
            if e & ~(Qcow2Entry.offsetMask | Qcow2Entry.copied | (h.extendedL2 ? 0 : Qcow2Entry.zeroFlag)) != 0 {
                problems += 1
                if problems <= 3 { warn("\(what) entry \(j) has reserved bits set (\(Self.hex(e)))") }
            }
            if h.hasExternalDataFile {
                if e & Qcow2Entry.copied != 0 || host != 0 { counts.externalDataClusters += 1 }
                continue
            }
            if host == 0 { continue }
            guard isAligned(host) else {
                problems += 1
                if problems <= 3 { warn("\(what) entry \(j): data cluster at \(Self.hex(host)) is not cluster aligned") }
                continue
            }
            // Shared with the active image or an earlier snapshot: already listed.
            if let fresh = referencedData?.insert(host).inserted, !fresh, snapshot != nil { continue }
            guard host < fileSize else {
                problems += 1
                if problems <= 3 {
                    warn("\(what) entry \(j): data cluster at \(Self.hex(host)) lies past the end of the file (\(fileSize) bytes)")
                }
                continue
            }
            let kind: Qcow2Layout.Kind = vmstate ? .vmstate : (zero ? .zeroData : .data)
            if snapshot != nil {
                counts.snapshotOnlyDataClusters += 1
            } else if vmstate {
                counts.vmstateClusters += 1
            } else {
                counts.dataClusters += 1
                if zero { counts.zeroClusters += 1 }
            }
            addRun(.init(offset: host, length: clusterSize, kind: kind, guestOffset: shownOffset, snapshot: snapshot))
        }
        if problems > 3 { warn("\(what): \(problems - 3) more bad entries") }
    }

    // MARK: snapshots

    mutating func scanSnapshots() {
        let n = Int(header.nbSnapshots)
        guard n > 0 else { return }
        let off = header.snapshotsOffset
        guard off != 0, isAligned(off) else {
            warn("snapshot table offset \(Self.hex(off)) is not cluster aligned (or 0)")
            return
        }
        if n > limits.maxSnapshots { warn("\(n) snapshots: only the first \(limits.maxSnapshots) are walked") }
        let count = min(n, limits.maxSnapshots)
        let maxTable: UInt64 = 64 << 20   // QEMU's limit on the snapshot table
        var pos = off
        var l1s: [(offset: UInt64, size: UInt64)] = []
        for k in 0..<count {
            let tableLength = pos - off
            guard tableLength + 40 <= maxTable else {
                warn("snapshot table is larger than 64 MiB (QEMU's limit): stopped at snapshot \(k + 1)")
                break
            }
            guard let fixed = readMetadata(pos, 40, "snapshot \(k + 1) header") else { break }
            let l1Offset = fixed.be64(at: 0), l1Size = UInt64(fixed.be32(at: 8))
            let idSize = UInt64(fixed.be16(at: 12)), nameSize = UInt64(fixed.be16(at: 14))
            let extraSize = UInt64(fixed.be32(at: 36))
            let entryLength = (40 + extraSize + idSize + nameSize + 7) / 8 * 8
            guard tableLength + entryLength <= maxTable else {
                warn("snapshot \(k + 1) is \(entryLength) bytes long: the snapshot table would pass 64 MiB")
                break
            }
            if pos + entryLength > fileSize {
                warn("snapshot \(k + 1) entry at \(Self.hex(pos)) is cut short by the end of the file")
                break
            }
            l1s.append((l1Offset, l1Size))
            pos += entryLength
        }
        counts.snapshots = l1s.count
        if pos > off { add(.init(offset: off, length: pos - off, kind: .snapshotTable)) }
        for (k, l1) in l1s.enumerated() {
            if budgetExhausted { break }
            scanL1(offset: l1.offset, size: l1.size, snapshot: k)
        }
    }

    // MARK: bitmaps

    mutating func scanBitmaps() {
        guard let ext = header.extensions.first(where: { $0.type == Qcow2HeaderExtension.bitmaps }) else { return }
        guard ext.length >= 24, let b = read(ext.dataOffset, 24), b.count == 24 else {
            warn("bitmaps extension is too short (\(ext.length) bytes)")
            return
        }
        let nb = Int(b.be32(at: 0)), dirSize = b.be64(at: 8), dirOffset = b.be64(at: 16)
        if header.autoclearFeatures & 1 == 0 {
            warn("bitmaps extension present but autoclear bit 0 is clear: QEMU ignores the bitmaps")
        }
        guard nb > 0 else { return }
        guard dirSize <= 64 << 20 else {
            warn("bitmap directory is \(dirSize) bytes (QEMU's limit is 64 MiB)")
            return
        }
        guard dirOffset != 0, isAligned(dirOffset) else {
            warn("bitmap directory offset \(Self.hex(dirOffset)) is not cluster aligned (or 0)")
            return
        }
        guard let dir = readMetadata(dirOffset, dirSize, "bitmap directory") else { return }
        add(.init(offset: dirOffset, length: dirSize, kind: .bitmapDirectory))
        var pos = 0
        var found = 0
        for k in 0..<min(nb, limits.maxBitmaps) {
            guard pos + 24 <= dir.count else {
                warn("bitmap directory ends before bitmap \(k + 1) of \(nb)")
                break
            }
            let tableOffset = dir.be64(at: pos), tableSize = UInt64(dir.be32(at: pos + 8))
            let nameSize = Int(dir.be16(at: pos + 18)), extraSize = Int(dir.be32(at: pos + 20))
            pos += (24 + extraSize + nameSize + 7) / 8 * 8
            found += 1
            scanBitmapTable(k, offset: tableOffset, size: tableSize)
            if budgetExhausted { break }
        }
        counts.bitmaps = found
    }

    mutating func scanBitmapTable(_ k: Int, offset: UInt64, size: UInt64) {
        guard size > 0 else { return }
        guard size * 8 <= 64 << 20 else {
            warn("bitmap \(k + 1) table has \(size) entries: too large")
            return
        }
        guard offset != 0, isAligned(offset) else {
            warn("bitmap \(k + 1) table offset \(Self.hex(offset)) is not cluster aligned (or 0)")
            return
        }
        guard let table = readMetadata(offset, size * 8, "bitmap \(k + 1) table") else { return }
        add(.init(offset: offset, length: size * 8, kind: .bitmapTable, index: k))
        var problems = 0
        for j in 0..<Int(size) {
            let host = table.be64(at: j * 8) & Qcow2Entry.offsetMask
            if host == 0 { continue }
            guard isAligned(host), host < fileSize else {
                problems += 1
                if problems == 1 { warn("bitmap \(k + 1) table entry \(j): data at \(Self.hex(host)) is misaligned or past the end of the file") }
                continue
            }
            counts.bitmapDataClusters += 1
            // guestOffset here is the bitmap table index times the cluster size, so runs coalesce.
            addRun(.init(offset: host, length: clusterSize, kind: .bitmapData, index: k, guestOffset: UInt64(j) * clusterSize))
        }
    }

    // MARK: free / leaked sweep

    /// Sorts the regions, reports overlaps, then compares what is referenced with the refcounts.
    mutating func sweep() {
        regions.sort { a, b in a.offset != b.offset ? a.offset < b.offset : a.length > b.length }
        // Overlaps (byte ranges; several compressed clusters may share a host cluster without overlapping).
        var maxEnd: UInt64 = 0, maxIndex = -1, overlaps = 0
        for (i, r) in regions.enumerated() {
            if maxIndex >= 0, r.offset < maxEnd {
                overlaps += 1
                if overlaps <= 5 { warn("\(describe(r)) overlaps \(describe(regions[maxIndex]))") }
            }
            if r.end > maxEnd { maxEnd = r.end; maxIndex = i }
        }
        if overlaps > 5 { warn("\(overlaps - 5) more overlapping regions") }

        // Referenced clusters as sorted, disjoint [first, last] intervals.
        var used: [(first: UInt64, last: UInt64)] = []
        for r in regions where r.length > 0 {
            let first = r.offset >> clusterBits, last = (r.end - 1) >> clusterBits
            if let l = used.last, first <= l.last &+ 1 {
                if last > l.last { used[used.count - 1].last = last }
            } else {
                used.append((first, last))
            }
        }
        let fileClusters = counts.fileClusters
        for u in used where u.first < fileClusters {
            counts.referencedClusters += min(u.last, fileClusters - 1) - u.first + 1
        }

        let perBlock = header.refblockEntries
        var out: [Qcow2Layout.Region] = []
        var swept: UInt64 = 0
        var cursor = 0     // into `used`
        var rbCursor = 0   // into `refblocks` (sorted by refcount table index)
        var unrefFirst: UInt64? = nil
        var dropped = false
        let cb = clusterBits, fs = fileSize, room = max(0, limits.maxRegions - regions.count)

        func emit(_ kind: Qcow2Layout.Kind, _ first: UInt64, _ count: UInt64, into out: inout [Qcow2Layout.Region]) {
            let offset = first << cb
            let rest = fs - offset
            let length = count > (rest >> cb) ? rest : count << cb
            if let last = out.last, last.kind == kind, last.end == offset {
                out[out.count - 1].length += length
            } else if out.count < room {
                out.append(.init(offset: offset, length: length, kind: kind))
            } else {
                dropped = true
            }
        }

        var c: UInt64 = 0
        while c < fileClusters {
            let blockIndex = c / perBlock
            while rbCursor < refblocks.count, UInt64(refblocks[rbCursor].index) < blockIndex { rbCursor += 1 }
            let hasBlock = rbCursor < refblocks.count && UInt64(refblocks[rbCursor].index) == blockIndex
            guard hasBlock else {
                // No refcount block up to the next one: every cluster there has refcount 0.
                var gapEnd = fileClusters
                if rbCursor < refblocks.count {
                    let (start, overflow) = UInt64(refblocks[rbCursor].index).multipliedReportingOverflow(by: perBlock)
                    if !overflow { gapEnd = min(start, fileClusters) }
                }
                while c < gapEnd {
                    while cursor < used.count, used[cursor].last < c { cursor += 1 }
                    if cursor < used.count, used[cursor].first <= c {
                        let stop = min(used[cursor].last &+ 1, gapEnd)
                        counts.unrefcountedClusters += stop - c
                        if unrefFirst == nil { unrefFirst = c }
                        c = stop
                    } else {
                        let stop = cursor < used.count ? min(used[cursor].first, gapEnd) : gapEnd
                        counts.freeClusters += stop - c
                        emit(.free, c, stop - c, into: &out)
                        c = stop
                    }
                }
                continue
            }
            let blockEnd = min(blockIndex * perBlock + perBlock, fileClusters)
            if swept + (blockEnd - c) > limits.maxSweptClusters {
                counts.sweepComplete = false
                warn("free/leaked sweep stopped at cluster \(c) of \(fileClusters) (limit \(limits.maxSweptClusters))")
                break
            }
            guard let block = readMetadata(refblocks[rbCursor].offset, clusterSize, "refcount block \(blockIndex)") else {
                counts.sweepComplete = false
                warn("free/leaked sweep stopped at cluster \(c): refcount block \(blockIndex) could not be read")
                break
            }
            swept += blockEnd - c
            while c < blockEnd {
                while cursor < used.count, used[cursor].last < c { cursor += 1 }
                let referenced = cursor < used.count && used[cursor].first <= c
                let rc = refcount(block, c % perBlock)
                if rc != 0 { counts.refcountedClusters += 1 }
                if referenced {
                    if rc == 0 {
                        counts.unrefcountedClusters += 1
                        if unrefFirst == nil { unrefFirst = c }
                    }
                } else if rc == 0 {
                    counts.freeClusters += 1
                    emit(.free, c, 1, into: &out)
                } else {
                    counts.leakedClusters += 1
                    emit(.leaked, c, 1, into: &out)
                }
                c += 1
            }
        }
        if dropped { warn("too many free/leaked runs: the rest are counted, not listed") }
        if counts.unrefcountedClusters > 0, let f = unrefFirst {
            warn("\(counts.unrefcountedClusters) referenced clusters have refcount 0 (first at \(Self.hex(f << clusterBits)))")
        }
        if budgetExhausted { counts.sweepComplete = false }
        if !out.isEmpty {
            regions.append(contentsOf: out)
            regions.sort { a, b in a.offset != b.offset ? a.offset < b.offset : a.length > b.length }
        }
    }

    func describe(_ r: Qcow2Layout.Region) -> String {
        Qcow2Layout.describe(r) + " at " + Self.hex(r.offset)
    }
}

extension Qcow2Layout {
    /// A short description of a region: its kind plus the index, guest offset or snapshot that identify it.
    public static func describe(_ r: Region) -> String {
        var s = r.kind.rawValue
        switch r.kind {
        case .headerExtension:
            if let t = r.extensionType {
                s += " (" + Qcow2HeaderExtension(type: t, dataOffset: 0, length: 0).name + ")"
            }
        case .l2Table:
            if let i = r.index { s += " (L1 index \(i))" }
        case .refcountBlock:
            if let i = r.index { s += " (refcount table index \(i))" }
        case .bitmapTable, .bitmapData:
            if let i = r.index { s += " (bitmap \(i + 1))" }
        case .data, .zeroData, .compressed:
            if let g = r.guestOffset { s += " (guest 0x" + String(g, radix: 16) + ")" }
        case .vmstate:
            if let g = r.guestOffset { s += " (vmstate offset 0x" + String(g, radix: 16) + ")" }
        default: break
        }
        if let k = r.snapshot { s += r.kind == .snapshotL1Table ? " (snapshot \(k + 1))" : " [snapshot \(k + 1) only]" }
        return s
    }
}
