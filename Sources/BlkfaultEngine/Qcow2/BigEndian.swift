/// Big-endian field access over byte arrays: every qcow2 integer is big-endian.
extension Array where Element == UInt8 {
    @inline(__always)
    func be64(at i: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<8 { v = (v << 8) | UInt64(self[i + k]) }
        return v
    }
    @inline(__always)
    func be32(at i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = (v << 8) | UInt32(self[i + k]) }
        return v
    }
    @inline(__always)
    func be16(at i: Int) -> UInt16 { (UInt16(self[i]) << 8) | UInt16(self[i + 1]) }
}
