/// Big-endian field access over byte arrays: every qcow2 integer is big-endian.
extension Array where Element == UInt8 {
    // One bounds check and one load, not one per byte: L2 tables are walked entry by
    // entry on every metadata read (qemu-img check: most of the engine's time).
    @inline(__always)
    func be64(at i: Int) -> UInt64 {
        precondition(i >= 0 && i <= count - 8, "be64 out of range")
        return withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: i, as: UInt64.self)) }
    }
    @inline(__always)
    func be32(at i: Int) -> UInt32 {
        precondition(i >= 0 && i <= count - 4, "be32 out of range")
        return withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: i, as: UInt32.self)) }
    }
    @inline(__always)
    func be16(at i: Int) -> UInt16 { (UInt16(self[i]) << 8) | UInt16(self[i + 1]) }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func be64(at i: Int) -> UInt64 {
        precondition(i >= 0 && i <= count - 8, "be64 out of range")
        return UInt64(bigEndian: loadUnaligned(fromByteOffset: i, as: UInt64.self))
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle`'s UTF-8 bytes occur in these bytes. (String's `contains(_:)` for a
    /// string lives in _StringProcessing, which the engine does not link: issue 7.)
    func containsBytes(of needle: StaticString) -> Bool {
        let n = needle.utf8CodeUnitCount
        guard n > 0, count >= n else { return n == 0 }
        return needle.withUTF8Buffer { pattern in
            withUnsafeBufferPointer { bytes in
                search: for start in 0...(bytes.count - n) {
                    for k in 0..<n where bytes[start + k] != pattern[k] { continue search }
                    return true
                }
                return false
            }
        }
    }
}
