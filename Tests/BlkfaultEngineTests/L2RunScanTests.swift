import Testing
import BlkfaultEngine

/// Learning an L2 slice scans runs of entries that point to consecutive clusters four
/// entries per compare. Checked here against the definition, entry by entry: every
/// entry that is not compressed and has offset bits names a data cluster, and the
/// slice's return value is `hasAllocationBoundary`.
@Suite struct L2RunScanTests {
    static let cluster: UInt64 = 1024, bits: UInt64 = 10
    static let copied: UInt64 = 1 << 63, offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00

    /// An image whose L1 entry 0 points to the table at cluster 100; `extended`: 16-byte entries.
    func image(extended: Bool) -> (ShadowImage, MemoryImage, UInt64) {
        var file = freshQcow2()
        if extended { file.bytes[79] |= 1 << 4 }  // incompatible_features bit 4: extended L2
        let table = 100 * Self.cluster
        let l1 = Int(3 * Self.cluster)
        file.bytes.replaceSubrange(l1..<l1 + 8, with: be64(Self.copied | table))
        file.write(offset: table, data: [UInt8](repeating: 0, count: Int(Self.cluster)))
        return (try! ShadowImage(reading: file), file, table)
    }

    /// Entries made of runs of random lengths (also across the four-entry steps), runs that
    /// change flags midway, gaps of unallocated entries (some with flags only), single entries.
    func randomEntries(_ n: Int, _ g: inout some RandomNumberGenerator, far: Bool) -> [UInt64] {
        var entries: [UInt64] = []
        while entries.count < n {
            switch UInt8.random(in: 0..<10, using: &g) {
            case 0...4:
                let length = Int.random(in: 1...40, using: &g)
                var host = UInt64.random(in: 1..<30_000, using: &g) * Self.cluster
                var flags: UInt64 = Bool.random(using: &g) ? Self.copied : 0
                for k in 0..<length {
                    if k > 0, UInt8.random(in: 0..<25, using: &g) == 0 { flags ^= Self.copied }   // breaks the run
                    if k > 0, UInt8.random(in: 0..<25, using: &g) == 0 { host += Self.cluster }   // skips a cluster
                    if k > 0, UInt8.random(in: 0..<25, using: &g) == 0 { host -= 2 * Self.cluster } // goes back
                    entries.append(flags | (host & Self.offsetMask) | (UInt8.random(in: 0..<8, using: &g) == 0 ? 1 : 0))
                    host += Self.cluster
                }
            case 5...7:
                // Gaps, short or long (the scan skips four at a time): holes, with the
                // copied or zero flag only, and now and then a compressed entry in them.
                let long = UInt8.random(in: 0..<4, using: &g) == 0
                for _ in 0..<Int.random(in: 1...(long ? 40 : 6), using: &g) {
                    switch UInt8.random(in: 0..<16, using: &g) {
                    case 0: entries.append(1)
                    case 1: entries.append(Self.copied | 1)
                    case 2: entries.append(1 << 62 | UInt64.random(in: 1..<30_000, using: &g) * Self.cluster)
                    case 3: entries.append(1 << 62 | UInt64.random(in: 1..<512, using: &g))  // no offset bits
                    case 4...6: entries.append(Self.copied)
                    default: entries.append(0)
                    }
                }
            case 8:
                entries.append(Self.copied | UInt64.random(in: 1..<30_000, using: &g) * Self.cluster)
            default:
                // Past the bitmap's reach (it must grow, or the far set takes it): the slow path.
                entries.append(far ? Self.copied | (1 << 40) * Self.cluster : 0)
            }
        }
        return Array(entries.prefix(n))
    }

    func slice(_ entries: [UInt64], stride: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: entries.count * stride)
        for (i, e) in entries.enumerated() { b.replaceSubrange(i * stride..<i * stride + 8, with: be64(e)) }
        return b
    }

    /// `warm`: the bitmap first grows to hold every cluster used; without, slices keep
    /// meeting runs past it (the bitmap grows, the scan goes on from the run).
    func check(extended: Bool, far: Bool, seed: UInt64, warm: Bool = true) {
        var g = SeededGenerator(seed)
        let (s, file, table) = image(extended: extended)
        var shadow = s
        let stride = extended ? 16 : 8, n = Int(Self.cluster) / stride
        // First a slice reaching the highest cluster used, so that the bitmap holds all
        // the later ones and their slices take the fast path (unless `far`).
        var expected: Set<UInt64> = warm ? [30_001] : [], expectedCompressed: Set<UInt64> = []
        var first = [UInt64](repeating: 0, count: n)
        first[0] = Self.copied | 30_001 * Self.cluster
        if warm { _ = slice(first, stride: stride).withUnsafeBytes { shadow.learnL2Read(offset: table, data: $0, file: file) } }
        for round in 0..<200 {
            let entries = randomEntries(n, &g, far: far && round % 3 == 0)
            let bytes = slice(entries, stride: stride)
            let boundary = bytes.withUnsafeBytes { shadow.learnL2Read(offset: table, data: $0, file: file) }
            for e in entries where e & (1 << 62) == 0 && e & Self.offsetMask != 0 {
                expected.insert((e & Self.offsetMask) >> Self.bits)
            }
            // A compressed entry here: one sector at offset bits 0..<60 (cluster_bits 10).
            for e in entries where e & (1 << 62) != 0 { expectedCompressed.insert((e & (1 << 60 - 1)) >> Self.bits) }
            #expect(boundary == shadow.hasAllocationBoundary(bytes), "round \(round)")
            #expect(shadow.dataClusters.count == expected.count, "round \(round)")
            #expect(shadow.compressedClusters == expectedCompressed, "round \(round)")
        }
        for c in UInt64(0)..<30_100 {
            #expect(shadow.dataClusters.contains(c) == expected.contains(c), "cluster \(c)")
        }
        if far { #expect(shadow.dataClusters.contains(1 << 40)) }
    }

    @Test(arguments: [false, true]) func standardEntries(far: Bool) { check(extended: false, far: far, seed: 7) }
    @Test(arguments: [false, true]) func extendedEntries(far: Bool) { check(extended: true, far: far, seed: 11) }
    @Test(arguments: [false, true]) func growingBitmap(far: Bool) { check(extended: false, far: far, seed: 13, warm: false) }

    /// Runs that stop at each position of a four-entry step (then unallocated entries),
    /// one to the slice's end, and one that a jump ends: the bits set are exactly the run's.
    @Test(arguments: 0..<10) func runEndsAtEveryPosition(_ variant: Int) {
        let (s, file, table) = image(extended: false)
        var shadow = s
        let n = Int(Self.cluster) / 8
        var warm = [UInt64](repeating: 0, count: n)
        warm[0] = Self.copied | 5_000 * Self.cluster
        _ = slice(warm, stride: 8).withUnsafeBytes { shadow.learnL2Read(offset: table, data: $0, file: file) }
        // 0..<8: n-8+variant entries, then zeroes; 8: all n; 9: n-1, then one elsewhere.
        let length = variant < 8 ? n - 8 + variant : variant == 8 ? n : n - 1
        var entries = (0..<n).map { i in i < length ? Self.copied | UInt64(1_000 + i) * Self.cluster : 0 }
        if variant == 9 { entries[n - 1] = Self.copied | 3_000 * Self.cluster }
        let boundary = slice(entries, stride: 8).withUnsafeBytes { shadow.learnL2Read(offset: table, data: $0, file: file) }
        #expect(boundary == (variant < 8))
        for c in UInt64(990)..<UInt64(1_000 + n + 10) {
            #expect(shadow.dataClusters.contains(c) == (c >= 1_000 && c < 1_000 + UInt64(length)), "cluster \(c)")
        }
        #expect(shadow.dataClusters.contains(3_000) == (variant == 9))
        #expect(shadow.dataClusters.count == length + 1 + (variant == 9 ? 1 : 0))
    }
}

/// A small seeded generator, so a failure repeats.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
