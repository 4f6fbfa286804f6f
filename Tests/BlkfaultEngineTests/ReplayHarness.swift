import BlkfaultEngine

/// Builds the image `qemu-img create -f qcow2 -o cluster_size=C IMG SIZE` makes
/// (v3, 16-bit refcounts): header, one reftable cluster, one refblock, the L1 table.
func freshQcow2(size: UInt64 = 1 << 30, clusterBits: UInt32 = 10) -> MemoryImage {
    let cluster = UInt64(1) << UInt64(clusterBits)
    let l2Entries = cluster / 8
    let l1Size = (size + cluster * l2Entries - 1) / (cluster * l2Entries)
    let l1Offset = 3 * cluster
    let l1Clusters = (l1Size * 8 + cluster - 1) / cluster
    var image = MemoryImage([UInt8](repeating: 0, count: Int(l1Offset + l1Size * 8)))
    func put64(_ v: UInt64, _ at: Int) { for k in 0..<8 { image.bytes[at + k] = UInt8((v >> UInt64(56 - 8 * k)) & 0xff) } }
    func put32(_ v: UInt32, _ at: Int) { for k in 0..<4 { image.bytes[at + k] = UInt8((v >> UInt32(24 - 8 * k)) & 0xff) } }
    put32(0x5146_49fb, 0); put32(3, 4); put32(clusterBits, 20); put64(size, 24)
    put32(UInt32(l1Size), 36); put64(l1Offset, 40); put64(cluster, 48); put32(1, 56)
    put32(4, 96); put32(112, 100)
    put64(2 * cluster, Int(cluster))                 // reftable[0] -> refblock
    for c in 0..<(3 + l1Clusters) { image.bytes[Int(2 * cluster + c * 2 + 1)] = 1 } // refcount 1
    return image
}

/// Drives an `ImageEngine` the way the preload does, with the file in memory:
/// each operation is decided, performed if allowed, then reported.
struct Replay {
    var file: MemoryImage
    var engine: ImageEngine

    init(_ file: MemoryImage, rules: String = "") throws {
        self.file = file
        engine = ImageEngine(rules: try RuleFile.parse(Array(rules.utf8), fileName: "test.cfg"), file: file)
        engine.noteOpen(writable: true)
    }

    @discardableResult
    mutating func read(_ offset: UInt64, _ length: UInt64) -> Step {
        let op = Operation(.read, offset: offset, length: length)
        let step = engine.before(op, file: file)
        if step.decision == .perform {
            let data = file.read(offset: offset, count: Int(length)) ?? []
            _ = engine.after(Operation(.read, offset: offset, data: data), succeeded: true, file: file)
        }
        return step
    }

    @discardableResult
    mutating func write(_ offset: UInt64, _ data: [UInt8]) -> Step {
        let op = Operation(.write, offset: offset, data: data)
        let step = engine.before(op, file: file)
        if step.decision == .perform {
            file.write(offset: offset, data: data)
            _ = engine.after(op, succeeded: true, file: file)
        }
        return step
    }

    @discardableResult
    mutating func flush() -> Step {
        let op = Operation(.flush)
        let step = engine.before(op, file: file)
        if step.decision == .perform { _ = engine.after(op, succeeded: true, file: file) }
        return step
    }

    /// QEMU's open: header, L1 table, refcount table, end of header extensions.
    mutating func open() {
        let h = engine.shadow!.header
        read(0, 112)
        read(h.l1TableOffset, UInt64(h.l1Size) * 8)
        read(h.refcountTableOffset, h.refcountTableSize)
        read(112, 8)
    }

    /// The refblock at `offset` with the refcounts of `clusters` raised to 1.
    func refblock(_ offset: UInt64, settingClusters clusters: [UInt64]) -> [UInt8] {
        var block = file.read(offset: offset, count: Int(engine.shadow!.clusterSize))!
        for c in clusters { block[Int(c) * 2 + 1] = 1 }
        return block
    }
}

func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> UInt64(56 - 8 * $0)) & 0xff) } }

/// An L2 slice whose first `count` entries point at consecutive host clusters from `host`.
func l2Slice(size: Int, host: UInt64, count: Int, cluster: UInt64) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: size)
    for i in 0..<count { b.replaceSubrange(i * 8..<i * 8 + 8, with: be64((1 << 63) | (host + UInt64(i) * cluster))) }
    return b
}

/// Two engines driven over the same I/O in two ways (DecideTests, SteadyPathTests).
protocol ReplayPair {
    /// The engine driven the ordinary way (it builds the refblocks written below).
    var reference: Replay { get }
    mutating func open()
    mutating func read(_ offset: UInt64, _ length: UInt64)
    mutating func write(_ offset: UInt64, _ data: [UInt8])
    mutating func flush()
}

extension ReplayPair {
    /// A fresh 1 KiB-cluster image's first allocation (notes §3.4 trace S1), then 128 data
    /// clusters at 69632 with their refcounts and L2 slice, each step flushed.
    mutating func allocate128DataClusters() {
        open()
        read(2048, 1024)
        write(2048, reference.refblock(2048, settingClusters: [67]))
        flush()
        write(68608, [UInt8](repeating: 0, count: 1024))
        flush()
        write(3072, be64((1 << 63) | 68608))
        flush()
        write(69632, [UInt8](repeating: 0xcd, count: 131072))
        write(2048, reference.refblock(2048, settingClusters: Array(68...195)))
        flush()
        write(68608, l2Slice(size: 1024, host: 69632, count: 128, cluster: 1024))
        flush()
    }
}

extension Replay {
    /// A fresh 1 KiB-cluster image's first allocation (notes §3.4 trace S1), then `count`
    /// data clusters at 69632 with their refcounts and L2 slice, each step flushed.
    /// `readsRefblock`: the allocation starts by reading the refcount block (a new process).
    mutating func allocateDataClusters(_ count: Int, readsRefblock: Bool = true) {
        open()
        if readsRefblock { read(2048, 1024) }
        write(2048, refblock(2048, settingClusters: [67]))
        flush()
        write(68608, [UInt8](repeating: 0, count: 1024))
        flush()
        write(3072, be64((1 << 63) | 68608))
        flush()
        write(69632, [UInt8](repeating: 0xcd, count: count * 1024))
        write(2048, refblock(2048, settingClusters: Array(68...(67 + UInt64(count)))))
        flush()
        write(68608, l2Slice(size: 1024, host: 69632, count: count, cluster: 1024))
        flush()
    }
}
