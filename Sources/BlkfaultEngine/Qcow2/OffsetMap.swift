/// Host cluster offset -> a value (the shadow model's L2 tables and refblocks): a
/// dictionary whose keys hash with one multiply instead of SipHash. `region(at:)` looks
/// one up for every metadata request (qemu-img check: two per L2 table read, ~150
/// instructions each with UInt64 keys).
public struct OffsetMap<Value: Sendable>: Sendable, ExpressibleByDictionaryLiteral {
    /// A cluster offset. Its hash: the offset times an odd constant, rotated so that the
    /// low bits (the dictionary's bucket) depend on all of the offset's bits (offsets are
    /// multiples of the cluster size: their own low bits are all zero).
    struct HashedOffset: Hashable, Sendable {
        let offset: UInt64

        func hash(into hasher: inout Hasher) { hasher.combine(offset) }

        @inline(__always)
        func _rawHashValue(seed: Int) -> Int {
            let h = offset &* 0x9e37_79b9_7f4a_7c15
            return Int(truncatingIfNeeded: (h &>> 32) | (h &<< 32)) ^ seed
        }
    }

    private var storage: [HashedOffset: Value] = [:]

    public init() {}

    public init(dictionaryLiteral elements: (UInt64, Value)...) {
        for (k, v) in elements { storage[HashedOffset(offset: k)] = v }
    }

    @inline(__always)
    public subscript(_ offset: UInt64) -> Value? {
        get { storage[HashedOffset(offset: offset)] }
        set { storage[HashedOffset(offset: offset)] = newValue }
    }

    /// As Dictionary's: the previous value, if any.
    @discardableResult
    public mutating func updateValue(_ value: Value, forKey offset: UInt64) -> Value? {
        storage.updateValue(value, forKey: HashedOffset(offset: offset))
    }

    /// Dictionary's `reserveCapacity` and `init(minimumCapacity:)` are not inlinable: called
    /// unspecialised, they made the runtime instantiate Dictionary metadata at the engine's
    /// start (~30 K instructions; issue 7, s8-7a). A few entries are left to grow the map
    /// on insertion (specialised); an empty map gets new storage of that capacity.
    public mutating func reserveCapacity(_ n: Int) {
        guard n > 32 else { return }
        if storage.isEmpty { storage = Dictionary(minimumCapacity: n) } else { storage.reserveCapacity(n) }
    }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.isEmpty }
    public func forEachKey(_ body: (UInt64) -> Void) { for k in storage.keys { body(k.offset) } }
    public var dictionary: [UInt64: Value] {
        Dictionary(uniqueKeysWithValues: storage.map { ($0.key.offset, $0.value) })
    }
}

extension OffsetMap: Equatable where Value: Equatable {}
