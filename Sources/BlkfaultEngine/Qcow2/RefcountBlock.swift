/// Refcount block entries: `refcount_bits` wide, big-endian from 8 bits up,
/// packed from the least significant bit of each byte below that.
enum RefcountBlock {
    static func entry(_ block: [UInt8], _ index: UInt64, bits: UInt64) -> UInt64 {
        if bits >= 8 {
            let width = Int(bits / 8), start = Int(index) * width
            var v: UInt64 = 0
            for k in 0..<width { v = (v << 8) | UInt64(block[start + k]) }
            return v
        }
        let bit = index * bits
        return (UInt64(block[Int(bit / 8)]) >> (bit % 8)) & ((1 << bits) - 1)
    }
}
