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

    /// `body` with the bitmap's words as they are (it does not grow), for a caller that
    /// sets bits in bulk (an L2 table's entries) and adds to `added` each bit it newly set.
    /// Indices past `words.count * 64` must go through `insert`.
    @inline(__always)
    public mutating func withWords<R>(_ body: (UnsafeMutableBufferPointer<UInt64>, inout Int) -> R) -> R {
        var added = 0
        let r = words.withUnsafeMutableBufferPointer { body($0, &added) }
        count += added
        return r
    }

    /// Makes the bitmap hold `index` (if below the limit), for a caller of `withWords`.
    public mutating func reserve(upTo index: UInt64) {
        guard index < Self.bitmapLimit else { return }
        let w = Int(index >> 6)
        if w >= words.count { grow(to: w) }
    }

    /// Grows geometrically so a file filled front to back costs amortised O(1).
    private mutating func grow(to w: Int) {
        // Never past the limit: indices from there on live in `far`, and `contains` must not
        // look for them in the bitmap.
        let count = min(max(w + 1, words.count * 2), Int(Self.bitmapLimit >> 6))
        let old = words.count
        // The old words copied and the new ones zeroed in bulk: appending a zero-filled
        // array cost ~16 instructions a word (a 20 GiB image of 4 KiB clusters: 82,000
        // words, three bitmaps grown so in a `qemu-img check`: ~4 M instructions).
        words = [UInt64](unsafeUninitializedCapacity: count) { buffer, initialized in
            let base = buffer.baseAddress!
            if old > 0 { words.withUnsafeBufferPointer { base.initialize(from: $0.baseAddress!, count: old) } }
            (base + old).initialize(repeating: 0, count: count - old)
            initialized = count
        }
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

    /// Bits 64*w ... 64*w+63 of the bitmap (0 past it; indices in `far` are not in it).
    @inline(__always)
    public func word(_ w: UInt64) -> UInt64 { w < UInt64(words.count) ? words[Int(w)] : 0 }

    public mutating func removeAll() { words = []; far = []; count = 0 }

    /// Whether the bitmap holds any word yet.
    public var hasBitmap: Bool { !words.isEmpty }
}
