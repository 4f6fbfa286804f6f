import Testing
import BlkfaultEngine

/// A qcow2 image built in memory, cluster by cluster, the way `qemu-img create` lays it out:
/// header, refcount table, one refcount block, L1 table, then whatever the test adds.
private struct LayoutImage {
    var bytes: [UInt8]
    let clusterBits: UInt64
    let refcountOrder: UInt64
    var cluster: UInt64 { 1 << clusterBits }
    var l1Offset: UInt64 { 3 * cluster }
    let l1Size: UInt64
    let size: UInt64

    init(size: UInt64 = 1 << 20, clusterBits: UInt64 = 9, refcountOrder: UInt64 = 4, version: UInt32 = 3) {
        self.clusterBits = clusterBits
        self.refcountOrder = refcountOrder
        self.size = size
        let cluster = UInt64(1) << clusterBits
        let perL1 = cluster * (cluster / 8)
        l1Size = (size + perL1 - 1) / perL1
        bytes = [UInt8](repeating: 0, count: Int(cluster * 3))
        put32(0x5146_49fb, 0); put32(version, 4); put32(UInt32(clusterBits), 20); put64(size, 24)
        put32(UInt32(l1Size), 36); put64(3 * cluster, 40); put64(cluster, 48); put32(1, 56)
        if version == 3 { put32(UInt32(refcountOrder), 96); put32(104, 100) }
        put64(2 * cluster, Int(cluster))   // reftable[0] -> refblock at cluster 2
        for c in 0..<3 { setRefcount(UInt64(c), 1) }
        // The L1 table: whole clusters of zeroes.
        let l1Clusters = (l1Size * 8 + cluster - 1) / cluster
        for _ in 0..<l1Clusters { _ = allocate() }
    }

    mutating func put64(_ v: UInt64, _ at: Int) {
        if bytes.count < at + 8 { bytes += [UInt8](repeating: 0, count: at + 8 - bytes.count) }
        for k in 0..<8 { bytes[at + k] = UInt8((v >> UInt64(56 - 8 * k)) & 0xff) }
    }
    mutating func put32(_ v: UInt32, _ at: Int) {
        for k in 0..<4 { bytes[at + k] = UInt8((v >> UInt32(24 - 8 * k)) & 0xff) }
    }
    mutating func put16(_ v: UInt16, _ at: Int) {
        bytes[at] = UInt8(v >> 8); bytes[at + 1] = UInt8(v & 0xff)
    }

    /// Sets a refcount in the first refcount block (sub-byte widths: bit 0 = LSB).
    mutating func setRefcount(_ c: UInt64, _ value: UInt64) {
        let bits = UInt64(1) << refcountOrder
        let base = Int(2 * cluster)
        if bits >= 8 {
            let n = Int(bits / 8)
            for k in 0..<n { bytes[base + Int(c) * n + k] = UInt8((value >> UInt64(8 * (n - 1 - k))) & 0xff) }
        } else {
            let bit = c * bits, i = base + Int(bit / 8), shift = bit % 8
            let mask = UInt8(((1 << bits) - 1) << shift)
            bytes[i] = (bytes[i] & ~mask) | (UInt8(value << shift) & mask)
        }
    }

    /// Appends a cluster at the end of the file with the given refcount; returns its offset.
    mutating func allocate(refcount: UInt64 = 1) -> UInt64 {
        let off = UInt64(bytes.count + Int(cluster) - 1) / cluster * cluster
        bytes += [UInt8](repeating: 0, count: Int(off + cluster) - bytes.count)
        setRefcount(off / cluster, refcount)
        return off
    }

    func l1Entry(_ i: Int) -> UInt64 { bytes.be64(Int(l1Offset) + i * 8) }

    /// Allocates the guest cluster `g` the way QEMU does: L2 table first (if needed), then data.
    @discardableResult
    mutating func writeGuest(cluster g: UInt64, flags: UInt64 = 0) -> UInt64 {
        let entries = cluster / 8
        let i = Int(g / entries), j = Int(g % entries)
        var l2 = l1Entry(i) & 0x00ff_ffff_ffff_fe00
        if l2 == 0 {
            l2 = allocate()
            put64(l2 | (1 << 63), Int(l1Offset) + i * 8)
        }
        let data = allocate()
        put64(data | (1 << 63) | flags, Int(l2) + j * 8)
        return data
    }

    var read: (UInt64, Int) -> [UInt8]? {
        let b = bytes
        return { off, len in
            guard off < UInt64(b.count) else { return [] }
            return Array(b[Int(off)..<min(b.count, Int(off) + len)])
        }
    }

    func scan(limits: Qcow2Layout.Limits = .init()) throws -> Qcow2Layout {
        try Qcow2Layout.scan(fileSize: UInt64(bytes.count), limits: limits, read: read)
    }
}

private extension Array where Element == UInt8 {
    func be64(_ i: Int) -> UInt64 { (0..<8).reduce(0) { ($0 << 8) | UInt64(self[i + $1]) } }
}

private func kinds(_ l: Qcow2Layout) -> [Qcow2Layout.Kind] { l.regions.map(\.kind) }

/// Valid images give sorted, non-overlapping regions.
private func expectWellFormed(_ l: Qcow2Layout, sourceLocation: SourceLocation = #_sourceLocation) {
    for (a, b) in zip(l.regions, l.regions.dropFirst()) {
        #expect(a.end <= b.offset, "\(Qcow2Layout.describe(a)) overlaps \(Qcow2Layout.describe(b))", sourceLocation: sourceLocation)
    }
}

@Suite struct Qcow2LayoutTests {
    @Test func freshImageHasHeaderTablesAndNothingElse() throws {
        let img = LayoutImage()
        let l = try img.scan()
        #expect(kinds(l) == [.header, .refcountTable, .refcountBlock, .l1Table])
        #expect(l.warnings == [])
        #expect(l.regions[0] == .init(offset: 0, length: 104, kind: .header))
        #expect(l.regions[2].index == 0)
        #expect(l.regions[3].offset == img.l1Offset && l.regions[3].length == img.l1Size * 8)
        #expect(l.counts.freeClusters == 0 && l.counts.leakedClusters == 0)
        #expect(l.counts.fileClusters == 4 && l.counts.referencedClusters == 4 && l.counts.refcountedClusters == 4)
        #expect(l.counts.sweepComplete)
        expectWellFormed(l)
    }

    @Test func dataRunsCoalesceAndL2TablesCarryTheirL1Index() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        img.writeGuest(cluster: 1)
        img.writeGuest(cluster: 2)
        img.writeGuest(cluster: 64 + 5)    // second L2 table (64 entries per 512-byte L2)
        let l = try img.scan()
        #expect(l.warnings == [])
        let l2 = l.regions(.l2Table)
        #expect(l2.map(\.index) == [0, 1])
        let data = l.regions(.data)
        #expect(data.count == 2)
        #expect(data[0].guestOffset == 0 && data[0].length == 3 * 512)
        #expect(data[1].guestOffset == 69 * 512 && data[1].length == 512)
        #expect(l.counts.dataClusters == 4 && l.counts.l2Tables == 2)
        #expect(l.counts.freeClusters == 0 && l.counts.leakedClusters == 0)
        expectWellFormed(l)
    }

    @Test func guestDiscontiguityBreaksARun() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        img.writeGuest(cluster: 2)   // host-contiguous with cluster 0's data, not guest-contiguous
        let data = try img.scan().regions(.data)
        #expect(data.map(\.guestOffset) == [0, 1024])
    }

    @Test func freeAndLeakedClustersAreFound() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        _ = img.allocate(refcount: 0)   // free
        _ = img.allocate(refcount: 1)   // leaked
        _ = img.allocate(refcount: 1)   // leaked (same run)
        _ = img.allocate(refcount: 0)   // free
        let l = try img.scan()
        #expect(l.warnings == [])
        #expect(l.regions(.free).map(\.offset) == [3072, 4608])
        let leaked = Qcow2Layout.Region(offset: 3584, length: 1024, kind: .leaked)
        #expect(l.regions(.leaked) == [leaked])
        #expect(l.counts.freeClusters == 2 && l.counts.leakedClusters == 2)
        expectWellFormed(l)
    }

    @Test func aReferencedClusterWithRefcountZeroIsAWarning() throws {
        var img = LayoutImage()
        let data = img.writeGuest(cluster: 0)
        img.setRefcount(data / 512, 0)
        let l = try img.scan()
        #expect(l.counts.unrefcountedClusters == 1)
        #expect(l.warnings.contains { $0.contains("refcount 0") })
    }

    @Test func clustersPastTheRefcountBlockHaveRefcountZero() throws {
        // 512-byte clusters, 64-bit refcounts: one refblock covers 64 clusters.
        var img = LayoutImage(refcountOrder: 6)
        for _ in 0..<70 { _ = img.allocate(refcount: 0) }
        let l = try img.scan()
        #expect(l.counts.freeClusters == 70)
        let expected = Qcow2Layout.Region(offset: 2048, length: 35840, kind: .free)
        #expect(l.regions(.free) == [expected])
    }

    @Test func subByteRefcounts() throws {
        var img = LayoutImage(refcountOrder: 0)
        img.writeGuest(cluster: 3)
        _ = img.allocate(refcount: 1)
        _ = img.allocate(refcount: 0)
        let l = try img.scan()
        #expect(l.warnings == [])
        #expect(l.counts.leakedClusters == 1 && l.counts.freeClusters == 1 && l.counts.dataClusters == 1)
    }

    @Test func version2Header() throws {
        var img = LayoutImage(version: 2)
        img.writeGuest(cluster: 1)
        let l = try img.scan()
        #expect(l.header.version == 2)
        #expect(l.regions[0] == .init(offset: 0, length: 72, kind: .header))
        #expect(l.regions(.data).first?.guestOffset == 512)
        #expect(l.warnings == [])
    }

    @Test func zeroCompressedAndVmstateEntries() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0, flags: 1)           // preallocated zero
        // The VM state area starts at the L1 index past the disk: 1 MiB / 32 KiB per L1 entry = 32.
        #expect(try img.header.vmStateL1Index == 32)
        // The L1 table has exactly 32 entries; grow it to 33 for the vmstate entry.
        img.put32(33, 36)
        img.writeGuest(cluster: 32 * 64 + 1)
        // A compressed entry in L2 0, slot 5: 2 sectors at a byte offset inside a new cluster.
        let host = img.allocate()
        let x: UInt64 = 62 - (9 - 8)
        let l2 = img.l1Entry(0) & 0x00ff_ffff_ffff_fe00
        img.put64((1 << 62) | (1 << x) | (host + 100), Int(l2) + 5 * 8)
        let l = try img.scan()
        #expect(l.warnings == [])
        #expect(l.regions(.zeroData).first?.guestOffset == 0)
        #expect(l.regions(.vmstate).first?.guestOffset == 512)
        let c = try #require(l.regions(.compressed).first)
        #expect(c.offset == host + 100 && c.length == 2 * 512 - 100 && c.guestOffset == 5 * 512)
        #expect(l.counts.zeroClusters == 1 && l.counts.vmstateClusters == 1 && l.counts.compressedClusters == 1)
        expectWellFormed(l)
    }

    @Test func headerExtensionsAndBackingFileName() throws {
        var img = LayoutImage()
        // Backing format extension ("qcow2", 5 bytes, padded to 8) then the end marker.
        img.put32(0xe279_2aca, 104); img.put32(5, 108)
        for (k, ch) in "qcow2".utf8.enumerated() { img.bytes[112 + k] = ch }
        // Backing file name after the extensions.
        img.put64(200, 8); img.put32(8, 16)
        for (k, ch) in "base.img".utf8.enumerated() { img.bytes[200 + k] = ch }
        let l = try img.scan()
        #expect(l.warnings == [])
        #expect(Array(kinds(l).prefix(3)) == [.header, .headerExtension, .backingFileName])
        #expect(l.regions[1].offset == 104 && l.regions[1].length == 16 && l.regions[1].extensionType == 0xe279_2aca)
        #expect(l.regions[2].offset == 200 && l.regions[2].length == 8)
    }

    @Test func snapshotsShareTablesWithoutDuplicates() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        img.writeGuest(cluster: 1)
        // Snapshot: a copy of the L1 table (same L2) and one snapshot-only L2 with one data cluster.
        let snapL1 = img.allocate()
        for i in 0..<Int(img.l1Size) { img.put64(img.l1Entry(i), Int(snapL1) + i * 8) }
        let ownL2 = img.allocate()
        img.put64(ownL2, Int(snapL1) + 3 * 8)
        let ownData = img.allocate()
        img.put64(ownData, Int(ownL2) + 2 * 8)
        let table = img.allocate()
        img.put64(snapL1, Int(table)); img.put32(UInt32(img.l1Size), Int(table) + 8)
        img.put16(1, Int(table) + 12); img.put16(2, Int(table) + 14)   // id "1", name "s1"
        img.bytes[Int(table) + 40] = 0x31; img.bytes[Int(table) + 41] = 0x73; img.bytes[Int(table) + 42] = 0x31
        img.put32(1, 60); img.put64(table, 64)
        let l = try img.scan()
        #expect(l.warnings == [])
        #expect(l.counts.snapshots == 1)
        #expect(l.regions(.snapshotL1Table).first?.snapshot == 0)
        #expect(l.regions(.snapshotTable).first == .init(offset: table, length: 48, kind: .snapshotTable))
        #expect(l.regions(.l2Table).map(\.snapshot) == [nil, 0])
        #expect(l.regions(.data).count == 2)
        #expect(l.regions(.data).last?.offset == ownData && l.regions(.data).last?.snapshot == 0)
        #expect(l.counts.dataClusters == 2 && l.counts.snapshotOnlyDataClusters == 1)
        #expect(l.counts.leakedClusters == 0 && l.counts.freeClusters == 0)
        expectWellFormed(l)
    }

    @Test func notQcow2Throws() {
        #expect(throws: Qcow2Error.tooShort(10)) {
            try Qcow2Layout.scan(fileSize: 10) { _, n in [UInt8](repeating: 0, count: n) }
        }
        #expect(throws: Qcow2Error.badMagic) {
            try Qcow2Layout.scan(fileSize: 4096) { _, n in [UInt8](repeating: 0x41, count: n) }
        }
        #expect(throws: Qcow2Error.truncated("the qcow2 header")) {
            try Qcow2Layout.scan(fileSize: 4096) { _, _ in nil }
        }
    }

    @Test func everyTruncationIsReportedNotFatal() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        img.writeGuest(cluster: 100)
        let full = img.bytes
        for cut in stride(from: 0, through: full.count, by: 7) {
            img.bytes = Array(full.prefix(cut))
            do {
                let l = try img.scan()
                #expect(cut >= 104)
                if cut < full.count - 511 { #expect(!l.warnings.isEmpty, "cut at \(cut)") }
            } catch {
                #expect(cut < 104, "cut at \(cut): \(error)")
            }
        }
    }

    @Test func hostilePointersBecomeWarnings() throws {
        var img = LayoutImage(clusterBits: 12)
        img.put32(4, 36)   // four L1 entries
        img.writeGuest(cluster: 0)
        let l2 = img.l1Entry(0) & 0x00ff_ffff_ffff_fe00
        // L1 entries sharing an L2 table, an L2 table past the end, an unaligned one.
        img.put64(l2, Int(img.l1Offset) + 8)
        img.put64(1 << 40, Int(img.l1Offset) + 16)
        img.put64(l2 + 512, Int(img.l1Offset) + 24)
        // A data cluster that is the L1 table; a refcount block past the end.
        img.put64(img.l1Offset, Int(l2) + 8)
        img.put64(1 << 50, Int(img.cluster) + 16)
        let l = try img.scan()
        #expect(l.warnings.contains { $0.contains("share the L2 table") })
        #expect(l.warnings.contains { $0.contains("L2 table at 0x10000000000 lies past the end of the file") })
        #expect(l.warnings.contains { $0.contains("refcount block 2 at 0x4000000000000 lies past the end") })
        #expect(l.warnings.contains { $0.contains("not cluster aligned") })
        #expect(l.warnings.contains { $0.contains("overlaps") })
    }

    @Test func hugeClaimedSizesFinishQuickly() throws {
        // A 2^50-byte "file" of which only the header exists: every table is zero.
        let img = LayoutImage()
        let start = ContinuousClock.now
        let l = try Qcow2Layout.scan(fileSize: 1 << 50, read: img.read)
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(l.counts.freeClusters > 0)
        // Refcount table pointing every entry at distinct, far-away (sparse) refcount blocks.
        var hostile = LayoutImage(refcountOrder: 0)
        for i in 0..<64 { hostile.put64(UInt64(i + 1) << 30, Int(hostile.cluster) + i * 8) }
        let start2 = ContinuousClock.now
        var limits = Qcow2Layout.Limits()
        limits.maxSweptClusters = 1 << 16
        _ = try Qcow2Layout.scan(fileSize: 1 << 45, limits: limits, read: hostile.read)
        #expect(ContinuousClock.now - start2 < .seconds(20))
    }

    @Test func metadataBudgetStopsTheWalk() throws {
        var img = LayoutImage()
        for g in stride(from: 0, to: 2048, by: 64) { img.writeGuest(cluster: UInt64(g)) }
        var limits = Qcow2Layout.Limits()
        limits.maxMetadataBytes = 4096
        let l = try img.scan(limits: limits)
        #expect(l.warnings.contains { $0.contains("stopped reading metadata") })
        #expect(!l.counts.sweepComplete)
    }

    @Test func warningsAreCapped() throws {
        var img = LayoutImage()
        img.writeGuest(cluster: 0)
        // Every reftable entry unaligned.
        for i in 1..<64 { img.put64(UInt64(i) * 512 + 1000, Int(img.cluster) + i * 8) }
        var limits = Qcow2Layout.Limits()
        limits.maxWarnings = 10
        let l = try img.scan(limits: limits)
        #expect(l.warnings.count == 11)
        #expect(l.warnings.last?.hasPrefix("... and") == true)
    }

    @Test func randomCorruptionNeverCrashes() throws {
        var base = LayoutImage()
        for g: UInt64 in [0, 1, 2, 70, 300, 1000] { base.writeGuest(cluster: g) }
        _ = base.allocate(refcount: 1)
        let pristine = base.bytes
        var rng = SplitMix(seed: 0x626c_6b66)
        for round in 0..<400 {
            var img = base
            img.bytes = pristine
            // Flip bytes, biased towards the metadata clusters (first 5 clusters) and the tables.
            for _ in 0..<(1 + Int(rng.next() % 16)) {
                let limit = rng.next() % 2 == 0 ? min(5 * 512, pristine.count) : pristine.count
                let at = Int(rng.next() % UInt64(limit))
                img.bytes[at] = UInt8(truncatingIfNeeded: rng.next())
            }
            if round % 5 == 0 { img.bytes = Array(img.bytes.prefix(Int(rng.next() % UInt64(pristine.count)))) }
            do {
                let l = try img.scan()
                for r in l.regions where r.kind != .compressed && r.kind != .data && r.kind != .vmstate && r.kind != .zeroData {
                    #expect(r.offset < UInt64(img.bytes.count) || r.length == 0)
                }
            } catch {
                // Only header-level problems throw.
                #expect(error is Qcow2Error)
            }
        }
    }
}

/// A small deterministic PRNG (SplitMix64) for the corruption test.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

private extension LayoutImage {
    var header: Qcow2Header { get throws { try Qcow2Header(bytes: Array(bytes.prefix(112))) } }
}
