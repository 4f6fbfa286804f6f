import BlkfaultEngine
import CHeap

/// A qcow2 file made up on the fly (v3, 16-bit refcounts): 1 TiB virtual, every
/// tenth guest cluster allocated, every L2 table present. Layout in host clusters:
/// 0 header, 1.. reftable, then L1, L2 tables, refblocks, data. Nothing is stored:
/// each read is computed, so the only memory that grows is the engine's.
public struct SyntheticImage: ImageReader {
    let bits: UInt64
    var cluster: UInt64 { 1 << bits }
    let virtualSize: UInt64 = 1 << 40
    var l2Entries: UInt64 { cluster / 8 }
    var guestClusters: UInt64 { virtualSize >> bits }
    var l1Size: UInt64 { (guestClusters + l2Entries - 1) / l2Entries }
    var dataClusters: UInt64 { (guestClusters + 9) / 10 }
    var refblockEntries: UInt64 { cluster / 2 }
    let reftableClusters: UInt64
    var l1Clusters: UInt64 { (l1Size * 8 + cluster - 1) / cluster }
    var l1Start: UInt64 { 1 + reftableClusters }
    var l2Start: UInt64 { l1Start + l1Clusters }
    var refblockStart: UInt64 { l2Start + l1Size }
    let refblockCount: UInt64
    var dataStart: UInt64 { refblockStart + refblockCount }

    init(clusterBits: UInt32) {
        bits = UInt64(clusterBits)
        let c: UInt64 = 1 << bits
        let guest: UInt64 = (1 << 40) >> bits
        let perTable: UInt64 = c / 8
        let l1: UInt64 = (guest + perTable - 1) / perTable
        let l1Clusters: UInt64 = (l1 * 8 + c - 1) / c
        let data: UInt64 = (guest + 9) / 10
        var rt: UInt64 = 1, rb: UInt64 = 1
        // Fixed point: the refcount structures cover themselves too.
        for _ in 0..<8 {
            let total: UInt64 = 1 + rt + l1Clusters + l1 + rb + data
            rb = (total + c / 2 - 1) / (c / 2)
            rt = (rb * 8 + c - 1) / c
        }
        reftableClusters = rt; refblockCount = rb
    }

    var totalClusters: UInt64 { dataStart + dataClusters }
    public var size: UInt64 { totalClusters << bits }

    public func read(offset: UInt64, count: Int) -> [UInt8]? {
        guard offset < size else { return offset == size ? [] : nil }
        let end = min(size, offset + UInt64(count))
        var out = [UInt8](repeating: 0, count: Int(end - offset))
        var pos = offset
        while pos < end {
            let index = pos >> bits, within = pos & (cluster - 1)
            let n = min(cluster - within, end - pos)
            fill(&out, at: Int(pos - offset), cluster: index, from: within, count: n)
            pos += n
        }
        return out
    }

    private func put64(_ out: inout [UInt8], _ at: Int, _ v: UInt64) {
        for k in 0..<8 where at + k >= 0 && at + k < out.count { out[at + k] = UInt8((v >> UInt64(56 - 8 * k)) & 0xff) }
    }

    /// Bytes [from, from+count) of host cluster `index` into out[at...], by 8-byte entries.
    private func fill(_ out: inout [UInt8], at: Int, cluster index: UInt64, from: UInt64, count: UInt64) {
        let base = at - Int(from)
        func entries(_ value: (UInt64) -> UInt64, limit: UInt64) {
            var e = from / 8
            while e * 8 < from + count && e < limit { put64(&out, base + Int(e * 8), value(e)); e += 1 }
        }
        if index == 0 {
            guard from < 112 else { return }
            var h = [UInt8](repeating: 0, count: 112)
            func p32(_ v: UInt32, _ o: Int) { for k in 0..<4 { h[o + k] = UInt8((v >> UInt32(24 - 8 * k)) & 0xff) } }
            p32(0x5146_49fb, 0); p32(3, 4); p32(UInt32(bits), 20); put64(&h, 24, virtualSize)
            p32(UInt32(l1Size), 36); put64(&h, 40, l1Start << bits); put64(&h, 48, 1 << bits)
            p32(UInt32(reftableClusters), 56); p32(4, 96); p32(112, 100)
            for k in Int(from)..<min(112, Int(from + count)) { out[base + k] = h[k] }
        } else if index < l1Start {
            let first = (index - 1) * (cluster / 8)
            entries({ e in first + e < refblockCount ? (refblockStart + first + e) << bits : 0 }, limit: cluster / 8)
        } else if index < l2Start {
            let first = (index - l1Start) * (cluster / 8)
            entries({ e in first + e < l1Size ? ((l2Start + first + e) << bits) | (1 << 63) : 0 }, limit: cluster / 8)
        } else if index < refblockStart {
            let table = index - l2Start
            entries({ e in
                let g = table * l2Entries + e
                return g % 10 == 0 && g < guestClusters ? ((dataStart + g / 10) << bits) | (1 << 63) : 0
            }, limit: l2Entries)
        } else if index < dataStart {
            // 16-bit refcounts, 4 per 8-byte word: refcount 1 for every used cluster.
            let first = (index - refblockStart) * refblockEntries
            entries({ e in
                var w: UInt64 = 0
                for k in 0..<UInt64(4) where first + e * 4 + k < totalClusters { w |= 1 << (48 - 16 * k) }
                return w
            }, limit: cluster / 8)
        }
    }
}

/// Heap bytes the engine holds for the synthetic image after qemu-img check's reads.
public enum ShadowMemory {
    public struct Result { public var bytes = 0, tables = 0, l2 = 0, refblocks = 0, dataClusters = 0 }

    static func heapInUse() -> Int { Int(cheap_heap_in_use()) }

    public static func measure(clusterBits: UInt32) -> Result {
        let image = SyntheticImage(clusterBits: clusterBits)
        let before = heapInUse()
        var engine = ImageEngine(rules: RuleSet(), file: image)
        func read(_ offset: UInt64, _ length: UInt64) {
            let op = EngineOp(.read, offset: offset, length: length) { from, count in
                image.read(offset: offset + UInt64(from), count: count) ?? []
            }
            if engine.before(op, file: image).decision == .perform { _ = engine.after(op, succeeded: true, file: image) }
        }
        read(0, 112)
        read(image.l1Start << image.bits, image.l1Size * 8)
        read(1 << image.bits, image.reftableClusters << image.bits)
        for t in 0..<image.l1Size { read((image.l2Start + t) << image.bits, image.cluster) }
        for b in 0..<image.refblockCount { read((image.refblockStart + b) << image.bits, image.cluster) }
        let after = heapInUse()
        let shadow = engine.shadow!
        precondition(shadow.l2Tables.count == Int(image.l1Size), "the synthetic image was not understood")
        withExtendedLifetime(engine) {}
        return Result(bytes: after - before, tables: shadow.l2Tables.count + shadow.refblocks.count,
                      l2: shadow.l2Tables.count, refblocks: shadow.refblocks.count, dataClusters: Int(image.dataClusters))
    }
}
