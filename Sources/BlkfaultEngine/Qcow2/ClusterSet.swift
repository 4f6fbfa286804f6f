/// A set of host cluster indices: a bitmap over the file's clusters (one bit each,
/// so 1 TiB of 64 KiB clusters costs 2 MiB), with a hash set for indices past it
/// (an entry pointing far beyond any real file). Lookups hash nothing.
public struct ClusterSet: Sendable {
    private var words: [UInt64] = []
    private var far: Set<UInt64> = []
    public private(set) var count = 0
    /// Indices below this live in the bitmap (at most 16 MiB of it).
    static let bitmapLimit: UInt64 = 1 << 27

    public init() {}

    @inline(__always)
    public func contains(_ index: UInt64) -> Bool {
        if index < UInt64(words.count) << 6 { return words[Int(index >> 6)] & (1 << (index & 63)) != 0 }
        return index >= Self.bitmapLimit && !far.isEmpty && far.contains(index)
    }

    @discardableResult @inline(__always)
    public mutating func insert(_ index: UInt64) -> Bool {
        let w = Int(truncatingIfNeeded: index >> 6)
        if index < Self.bitmapLimit && w < words.count {
            let bit: UInt64 = 1 << (index & 63)
            if words[w] & bit != 0 { return false }
            words[w] |= bit
            count += 1
            return true
        }
        return insertGrowing(index)
    }

    private mutating func insertGrowing(_ index: UInt64) -> Bool {
        guard index < Self.bitmapLimit else {
            let new = far.insert(index).inserted
            if new { count += 1 }
            return new
        }
        let w = Int(index >> 6)
        if w >= words.count { grow(to: w) }
        let bit: UInt64 = 1 << (index & 63)
        if words[w] & bit != 0 { return false }
        words[w] |= bit
        count += 1
        return true
    }

    /// Inserts the indices `w * 64 + b` for each bit `b` set in `bits`: one update for
    /// a run of neighbouring clusters (an L2 table's entries, mostly).
    @inline(__always)
    public mutating func insert(word w: Int, bits: UInt64) {
        precondition(w >= 0 && UInt64(w) < Self.bitmapLimit >> 6, "word past the bitmap")
        if w >= words.count { grow(to: w) }
        let old = words[w]
        words[w] = old | bits
        count += (bits & ~old).nonzeroBitCount
    }

    /// Grows geometrically so a file filled front to back costs amortised O(1).
    private mutating func grow(to w: Int) {
        words += [UInt64](repeating: 0, count: max(w + 1, words.count * 2) - words.count)
    }

    public mutating func remove(_ index: UInt64) {
        guard index < Self.bitmapLimit else {
            if far.remove(index) != nil { count -= 1 }
            return
        }
        let w = Int(index >> 6)
        guard w < words.count else { return }
        let bit: UInt64 = 1 << (index & 63)
        if words[w] & bit != 0 { words[w] &= ~bit; count -= 1 }
    }

    public mutating func removeAll() { words = []; far = []; count = 0 }
}
