#if canImport(Glibc)
import Glibc
#endif

/// A set of host cluster indices: a bitmap over the file's clusters (one bit each,
/// so 1 TiB of 64 KiB clusters costs 2 MiB), with a hash set for indices past it
/// (an entry pointing far beyond any real file). Lookups hash nothing.
public struct ClusterSet: Sendable {
    /// The bitmap's words (copy on write, as an array's); nil until the first grows it.
    private var storage: WordBuffer?
    private var far: Set<UInt64> = []
    public private(set) var count = 0
    /// Indices below this live in the bitmap (at most 16 MiB of it).
    static let bitmapLimit: UInt64 = 1 << 27

    public init() {}

    @inline(__always)
    public func contains(_ index: UInt64) -> Bool {
        if let storage, index < UInt64(storage.count) << 6 { return storage.base[Int(index >> 6)] & (1 << (index & 63)) != 0 }
        return index >= Self.bitmapLimit && !far.isEmpty && far.contains(index)
    }

    @discardableResult @inline(__always)
    public mutating func insert(_ index: UInt64) -> Bool {
        let w = Int(truncatingIfNeeded: index >> 6)
        if index < Self.bitmapLimit && w < wordCount {
            let bit: UInt64 = 1 << (index & 63)
            if storage.unsafelyUnwrapped.base[w] & bit != 0 { return false }
            unique().base[w] |= bit
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
        if w >= wordCount { grow(to: w) }
        let words = unique().base
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
        let buffer = storage == nil ? UnsafeMutableBufferPointer<UInt64>(start: nil, count: 0)
            : UnsafeMutableBufferPointer(start: unique().base, count: storage!.count)
        let r = body(buffer, &added)
        count += added
        return r
    }

    /// Makes the bitmap hold `index` (if below the limit), for a caller of `withWords`.
    public mutating func reserve(upTo index: UInt64) {
        guard index < Self.bitmapLimit else { return }
        let w = Int(index >> 6)
        if w >= wordCount { grow(to: w) }
    }

    /// Grows geometrically so a file filled front to back costs amortised O(1).
    private mutating func grow(to w: Int) {
        // Never past the limit: indices from there on live in `far`, and `contains` must not
        // look for them in the bitmap.
        let count = min(max(w + 1, wordCount * 2), Int(Self.bitmapLimit >> 6))
        // A fresh zeroed buffer (WordBuffer) with the old words copied in: nothing zeroed
        // word by word (a 20 GiB image of 4 KiB clusters: 82,000 words, three bitmaps
        // grown so in a `qemu-img check`).
        let grown = WordBuffer(count: count)
        if let storage, storage.count > 0 { grown.base.update(from: storage.base, count: storage.count) }
        storage = grown
    }

    @inline(__always)
    private var wordCount: Int { storage?.count ?? 0 }

    /// The storage, copied first if another set shares it (copy on write).
    @inline(__always)
    private mutating func unique() -> WordBuffer {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.unsafelyUnwrapped.copy() }
        return storage.unsafelyUnwrapped
    }

    public mutating func remove(_ index: UInt64) {
        guard index < Self.bitmapLimit else {
            if far.remove(index) != nil { count -= 1 }
            return
        }
        let w = Int(index >> 6)
        guard w < wordCount else { return }
        let bit: UInt64 = 1 << (index & 63)
        if storage!.base[w] & bit != 0 { unique().base[w] &= ~bit; count -= 1 }
    }

    /// Bits 64*w ... 64*w+63 of the bitmap (0 past it; indices in `far` are not in it).
    @inline(__always)
    public func word(_ w: UInt64) -> UInt64 {
        guard let storage, w < UInt64(storage.count) else { return 0 }
        return storage.base[Int(w)]
    }

    public mutating func removeAll() { storage = nil; far = []; count = 0 }

    /// Whether the bitmap holds any word yet.
    public var hasBitmap: Bool { wordCount > 0 }
}

/// A bitmap's words, zeroed when allocated: from `mmap` when large (fresh zero pages, so
/// nothing is written to clear them, where a Swift array was zero-filled on top of the
/// zero pages malloc had mapped: ~0.66 M instructions per 20 GiB bitmap of 4 KiB
/// clusters; issue 7), else from `calloc`.
final class WordBuffer: @unchecked Sendable {
    let base: UnsafeMutablePointer<UInt64>
    let count: Int
    private let mapped: Bool

    init(count: Int) {
        self.count = count
        let bytes = max(1, count) * MemoryLayout<UInt64>.stride
        if bytes >= 64 << 10, let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
           p != MAP_FAILED {
            base = p.bindMemory(to: UInt64.self, capacity: max(1, count))
            mapped = true
        } else {
            guard let p = calloc(max(1, count), MemoryLayout<UInt64>.stride) else { fatalError("out of memory") }
            base = p.bindMemory(to: UInt64.self, capacity: max(1, count))
            mapped = false
        }
    }

    func copy() -> WordBuffer {
        let c = WordBuffer(count: count)
        c.base.update(from: base, count: count)
        return c
    }

    deinit {
        if mapped { munmap(base, max(1, count) * MemoryLayout<UInt64>.stride) } else { free(base) }
    }
}
