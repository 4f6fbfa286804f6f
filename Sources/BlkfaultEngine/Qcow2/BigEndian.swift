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
