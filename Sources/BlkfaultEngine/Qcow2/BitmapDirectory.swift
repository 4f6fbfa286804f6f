/// The persistent-bitmap directory (qcow2 "bitmaps" header extension): QEMU rewrites
/// it in place when it marks bitmaps in use at a read-write open and when it stores
/// them, with plain writes to the file and no blkdebug event.
extension ShadowImage {
    /// The directory's byte range as the extension on disk says now; nil without one.
    /// Read from the file each time: QEMU moves the directory when it grows.
    public func bitmapDirectory(file: ImageReader) -> Range<UInt64>? {
        // Extension data: u32 nb_bitmaps, u32 reserved, u64 directory size, u64 offset.
        guard let ext = header.extensions.first(where: { $0.type == Qcow2HeaderExtension.bitmaps }),
              ext.length >= 24, let b = file.read(offset: ext.dataOffset, count: 24), b.count == 24
        else { return nil }
        let size = b.be64(at: 8), offset = b.be64(at: 16)
        // Differences, not sums: a hostile extension's offset may lie near 2^64.
        guard size > 0, offset <= UInt64.max - size else { return nil }
        return offset..<(offset + size)
    }
}
