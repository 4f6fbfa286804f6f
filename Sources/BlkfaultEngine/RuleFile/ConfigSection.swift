/// One `key = "value"` of a section, with where it was written.
struct ConfigEntry {
    var key: [UInt8]
    var value: [UInt8]
    var line: Int
    var form: ValueForm
    var isPiece: Bool

    var keyText: String { String(decoding: key, as: UTF8.self) }
    var valueText: String { String(decoding: value, as: UTF8.self) }
}

/// One `[group]` section's entries, kept the way QEMU keeps them in a QDict: a repeated key
/// replaces the value where it stands (the last one wins), and QEMU validates them in
/// hash-bucket order, which decides which of several bad keys it reports.
struct ConfigSection {
    var headerLine: Int
    /// In insertion order (a replaced key keeps its place).
    private(set) var entries: [ConfigEntry] = []

    init(headerLine: Int) { self.headerLine = headerLine }

    /// Returns the entry a repeated key replaced, if any.
    @discardableResult
    mutating func put(_ entry: ConfigEntry) -> ConfigEntry? {
        if let slot = entries.firstIndex(where: { $0.key == entry.key }) {
            let replaced = entries[slot]
            entries[slot] = entry
            return replaced
        } else {
            entries.append(entry)
            return nil
        }
    }

    subscript(key: String) -> ConfigEntry? {
        entries.first { $0.key.elementsEqual(key.utf8) }
    }

    /// QDict iteration order: buckets ascending; inside a bucket, newest key first (head insertion).
    /// An insertion sort of positions (a section holds a few keys): sorting `enumerated()`
    /// pairs made the runtime build tuple and array metadata at the engine's start
    /// (~18 K instructions; issue 7, s8-7a). The order is total, so any sort gives this one.
    var qdictOrder: [ConfigEntry] {
        func precedes(_ a: Int, _ b: Int) -> Bool {
            let (bucketA, bucketB) = (qdictBucket(entries[a].key), qdictBucket(entries[b].key))
            return bucketA != bucketB ? bucketA < bucketB : a > b
        }
        var order: [Int] = []
        order.reserveCapacity(entries.count)
        for i in entries.indices {
            var at = order.count
            while at > 0, precedes(i, order[at - 1]) { at -= 1 }
            order.insert(i, at: at)
        }
        var sorted: [ConfigEntry] = []
        sorted.reserveCapacity(entries.count)
        for i in order { sorted.append(entries[i]) }
        return sorted
    }
}

/// QDict's bucket for a key: `tdb_hash(key) % 512` (qobject/qdict.c).
func qdictBucket(_ key: [UInt8]) -> UInt32 {
    var value = 0x238F_13AF &* UInt32(truncatingIfNeeded: key.count)
    for (i, byte) in key.enumerated() {
        value &+= UInt32(byte) << UInt32(i * 5 % 24)
    }
    return (1_103_515_243 &* value &+ 12345) % 512
}
