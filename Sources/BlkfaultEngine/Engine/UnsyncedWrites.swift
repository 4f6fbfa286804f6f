/// The pre-images of everything written to an image since its last flush, so that a
/// power loss can be modelled: writing them back newest first leaves the file as the
/// last successful flush left it. Bounded: past `limit` bytes it stops keeping them
/// and says so, rather than model a power loss it can no longer model.
public struct UnsyncedWrites: Sendable {
    public struct PreImage: Sendable {
        public var offset: UInt64
        public var bytes: [UInt8]
    }

    /// Bytes of pre-images kept at most (BLKFAULT_UNSYNCED_LIMIT; default 256 MiB).
    public let limit: Int
    public private(set) var preImages: [PreImage] = []
    /// The file's size at the last flush (known from the first write after it).
    public private(set) var sizeAtFlush: UInt64?
    public private(set) var bytesKept = 0
    /// More than `limit` bytes were written since the last flush: undoing is impossible.
    public private(set) var overflowed = false

    public static let defaultLimit = 256 << 20

    public init(limit: Int = defaultLimit) { self.limit = limit }

    /// Whether a write of `length` bytes still fits; false (and overflowed) once past the bound.
    public mutating func admits(_ length: UInt64) -> Bool {
        if overflowed { return false }
        if UInt64(bytesKept) + length > UInt64(limit) {
            overflowed = true
            preImages.removeAll()
            bytesKept = 0
            return false
        }
        return true
    }

    /// Before a write: what the range held (`bytes`, short where the file ended), and the file size.
    public mutating func record(offset: UInt64, bytes: [UInt8], fileSize: UInt64) {
        if sizeAtFlush == nil { sizeAtFlush = fileSize }
        guard !overflowed, !bytes.isEmpty else { return }
        preImages.append(PreImage(offset: offset, bytes: bytes))
        bytesKept += bytes.count
    }

    /// A flush succeeded: everything written so far is durable.
    public mutating func synced() {
        preImages.removeAll()
        sizeAtFlush = nil
        bytesKept = 0
        overflowed = false
    }

    public var isEmpty: Bool { preImages.isEmpty && sizeAtFlush == nil }
}
