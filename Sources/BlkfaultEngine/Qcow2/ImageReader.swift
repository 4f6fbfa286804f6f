/// Reads the image file as it is on disk now. The preload reads through the real
/// libc (under the shim's guard); tests read from memory.
public protocol ImageReader {
    func read(offset: UInt64, count: Int) -> [UInt8]?
    var size: UInt64 { get }
}

/// An in-memory image, for tests and replays.
public struct MemoryImage: ImageReader, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var size: UInt64 { UInt64(bytes.count) }
    public func read(offset: UInt64, count: Int) -> [UInt8]? {
        guard offset < UInt64(bytes.count) else { return offset == UInt64(bytes.count) ? [] : nil }
        let start = Int(offset)
        return Array(bytes[start..<min(bytes.count, start + count)])
    }
    /// Applies a write, growing the image as a file would.
    public mutating func write(offset: UInt64, data: [UInt8]) {
        let end = Int(offset) + data.count
        if end > bytes.count { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
        bytes.replaceSubrange(Int(offset)..<end, with: data)
    }
}
