import Testing
import BlkfaultEngine

/// ClusterSet keeps its bitmap in a buffer of its own (fresh zero pages when large):
/// it must behave as a set of integers with value semantics, as when it was an array.
struct ClusterSetTests {
    /// Random inserts and removals, small and large bitmaps (past the 64 KiB at which the
    /// buffer comes from mmap) and the far set, against Set<UInt64>; copies taken along
    /// the way must keep what they held when taken (copy on write).
    @Test(arguments: [UInt64(5_000), 600_000, 1 << 28])
    func behavesAsASetWithValueSemantics(range: UInt64) {
        var generator = SystemRandomNumberGenerator()
        var set = ClusterSet(), model = Set<UInt64>()
        var snapshots: [(ClusterSet, Set<UInt64>)] = []
        for step in 0..<4000 {
            let i = UInt64.random(in: 0..<range, using: &generator)
            if step % 5 == 4 {
                set.remove(i); model.remove(i)
                if let any = model.randomElement(using: &generator) { set.remove(any); model.remove(any) }
            } else {
                #expect(set.insert(i) == model.insert(i).inserted)
            }
            if step % 500 == 0 { snapshots.append((set, model)) }
        }
        #expect(set.count == model.count)
        for i in model { #expect(set.contains(i)) }
        for _ in 0..<2000 {
            let i = UInt64.random(in: 0..<range, using: &generator)
            #expect(set.contains(i) == model.contains(i), "index \(i)")
        }
        for (copy, copied) in snapshots {
            #expect(copy.count == copied.count)
            for i in copied { #expect(copy.contains(i)) }
            for i in model.subtracting(copied).prefix(200) { #expect(!copy.contains(i)) }
        }
    }

    /// A copy's bulk writes (`withWords`) and the original's inserts do not reach each other.
    @Test func bulkWritesCopyOnWrite() {
        var a = ClusterSet()
        a.reserve(upTo: 1_000_000)  // ~122 KiB of words: an mmap'd buffer
        a.insert(7)
        var b = a
        b.withWords { words, added in
            words[10] |= 1
            added += 1
        }
        a.insert(900_000)
        #expect(b.contains(640) && !a.contains(640))
        #expect(a.contains(900_000) && !b.contains(900_000))
        #expect(a.contains(7) && b.contains(7))
        #expect(a.count == 2 && b.count == 2)
        a.removeAll()
        #expect(!a.contains(7) && a.count == 0 && !a.hasBitmap && b.contains(7))
    }
}

/// ShadowImage.isL2TableInPlace(at:) (the walk path's test) says what region(at:) says.
struct IsL2TableTests {
    @Test func agreesWithRegion() throws {
        let clusterBits: UInt32 = 10, cluster = UInt64(1) << UInt64(clusterBits)
        var image = freshQcow2(size: 64 << 20, clusterBits: clusterBits)
        var shadow = try ShadowImage(reading: image)
        let l1 = shadow.header.l1TableOffset
        // Tables scattered past the metadata, one named twice (a corrupt L1), one entry far out.
        let tables: [UInt64] = [100, 101, 140, 100, 7_000].map { $0 * cluster }
        for (i, t) in tables.enumerated() { image.write(offset: l1 + UInt64(i) * 8, data: be64((1 << 63) | t)) }
        image.write(offset: 200 * cluster, data: [0])
        shadow = try ShadowImage(reading: image)
        var checked = 0
        for c in UInt64(0)..<7_100 {
            for offset in [c * cluster, c * cluster + 8, c * cluster + cluster - 1] {
                let isTable: Bool = { if case .l2Table = shadow.region(at: offset) { return true } else { return false } }()
                #expect(shadow.isL2TableInPlace(at: offset) == isTable, "offset \(offset)")
                if isTable { checked += 1 }
            }
        }
        #expect(checked == 4 * 3)  // four distinct tables, three offsets each
    }
}
