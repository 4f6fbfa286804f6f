/// The backing file a qcow2 overlay names in its header (qcow2 header fields 8/16 and
/// the backing-format extension).
public struct BackingFileName: Sendable, Equatable {
    /// As written in the header.
    public var name: String
    /// The backing-format extension's value ("raw", "qcow2", ...), nil if absent (QEMU probes).
    public var format: String?

    public init(name: String, format: String?) { self.name = name; self.format = format }

    /// Reads the name and format from the overlay's file; nil when there is none, or
    /// when it is not a plain file name (a protocol or `json:` name QEMU parses itself).
    public init?(header: Qcow2Header, file: ImageReader) {
        guard header.backingFileOffset != 0, header.backingFileSize > 0, header.backingFileSize <= 1023,
              let raw = file.read(offset: header.backingFileOffset, count: Int(header.backingFileSize)),
              raw.count == Int(header.backingFileSize) else { return nil }
        name = String(decoding: raw, as: UTF8.self)
        if name.hasPrefix("json:") || raw.containsBytes(of: "://") { return nil }
        format = nil
        if let ext = header.extensions.first(where: { $0.type == Qcow2HeaderExtension.backingFormat }),
           let bytes = file.read(offset: ext.dataOffset, count: Int(ext.length)) {
            format = String(decoding: bytes, as: UTF8.self)
        }
    }

    /// Where QEMU looks for it: a relative name is relative to the overlay's directory
    /// (bdrv_get_full_backing_filename), not to the working directory.
    public func path(overlay: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = overlay.lastIndex(of: "/") else { return name }
        return String(overlay[...slash]) + name
    }
}

/// An overlay's view of I/O on its backing file. QEMU raises `read_backing_aio` (and,
/// for a copy-on-write from the backing file, `cow_read` first) on the overlay's node,
/// then reads the backing file: blkdebug on the overlay never sees that read, and the
/// raised events act on the overlay's *next* request. So a backing data read is held
/// here and its events are raised before the overlay's next request, when that request
/// shows what the read was: the write of a copy-on-write, or anything else (a guest read
/// of clusters the overlay does not have, or a copy-on-read's source).
public struct BackingReads: Sendable {
    /// One file of the overlay's backing chain (0: the overlay's backing file, 1: that
    /// file's backing file, ...).
    struct ChainFile: Sendable {
        /// A model of a qcow2 file, to tell its data reads from its metadata reads
        /// (header, L1, L2, refcounts); nil for a raw file (all reads are data).
        var shadow: ShadowImage?
        /// No backing-format extension named it: QEMU probes its format when it opens
        /// it, one 512-byte read at offset 0 before the overlay's next request.
        var probing: Bool
        /// The program writes it (qemu-img commit): its reads are then that program's
        /// own (the commit's allocation in it), not the overlay's reads through it.
        var written = false
    }
    private var chain: [ChainFile?] = []
    /// Data reads of the backing chain since the overlay's last request. Length 0: an L2
    /// load of a qcow2 file of the chain, the first I/O of a backing read whose data
    /// read has not come yet (it fills the entry).
    public private(set) var pending: [(offset: UInt64, length: UInt64)] = []
    /// An L2 load's read was counted at the overlay's last request before its data
    /// read came: that data read belongs to it.
    private var absorbNextData = false
    /// COW regions still to be written after the first one (perform_cow without merged reads).
    private var cowWritesLeft = 0
    /// The program reads the backing chain through its own BlockBackend on the backing
    /// node (qemu-img rebase's comparison of old and new backing data): a data read that
    /// is no copy-on-write's raises nothing on the overlay.
    public var readByProgram = false

    public init() {}

    /// The program opened the chain's file at `depth`. `format`: the backing-format
    /// extension that named it; without one the file is probed (qcow2 if its header parses).
    public mutating func follow(depth: Int, format: String?, file: ImageReader) {
        guard depth >= 0, depth < 64 else { return }
        while chain.count <= depth { chain.append(nil) }
        if chain[depth] != nil { return }
        let shadow = format == nil || format == "qcow2" ? try? ShadowImage(reading: file) : nil
        chain[depth] = ChainFile(shadow: shadow, probing: format == nil)
    }

    public func isQcow2(depth: Int) -> Bool { depth < chain.count && chain[depth]?.shadow != nil }

    /// The program opened the chain's file at `depth` for writing, or wrote it.
    public mutating func noteWriter(depth: Int) {
        guard depth >= 0, depth < chain.count, chain[depth] != nil else { return }
        chain[depth]!.written = true
    }

    /// Whether anything waits for the overlay's next request (the engine's fast path).
    var idle: Bool {
        pending.isEmpty && cowWritesLeft == 0 && !absorbNextData && !chain.contains { $0?.probing == true }
    }

    /// A read of the chain's file at `depth`: a data read is held for the overlay's next
    /// request. Returns whether it was one.
    public mutating func read(offset: UInt64, length: UInt64, depth: Int = 0) -> Bool {
        guard depth >= 0, depth < chain.count, var file = chain[depth], !file.written else { return false }
        if file.probing {
            file.probing = false
            chain[depth] = file
            if offset == 0 && length == 512 { return false }
        }
        if let shadow = file.shadow {
            switch shadow.region(at: offset) {
            case .header, .l1Table, .refcountTable, .refcountBlock: return false
            case .l2Table:
                // QEMU raised the event before this load; concurrent requests on the
                // overlay may come before the data read, so it counts from here. A load
                // in the next file down belongs to the same read.
                if pending.last?.length != 0 { pending.append((offset, 0)) }
                return true
            case .data, .unreferenced: break
            }
        }
        guard length > 0 else { return false }
        if let last = pending.last, last.length == 0 {
            pending[pending.count - 1] = (offset, length)
            return true
        }
        if absorbNextData {
            absorbNextData = false
            return false
        }
        // One backing request read in pieces (a qcow2 backing's host run split): one raise.
        if let last = pending.last, last.offset + last.length == offset {
            pending[pending.count - 1].length += length
        } else {
            pending.append((offset, length))
        }
        return true
    }

    /// The events of the overlay's next request `op` (as its classifier gave them),
    /// with those of the held backing reads put where QEMU raises them.
    mutating func resolve(_ op: Operation, _ events: [BlkdebugEvent], clusterSize: UInt64) -> [BlkdebugEvent] {
        absorbNextData = pending.last?.length == 0
        for i in chain.indices where chain[i]?.probing == true { chain[i]!.probing = false }
        let partial = op.offset % clusterSize != 0 || op.length % clusterSize != 0
        let data = events.firstIndex(of: .writeAio)
        if op.kind == .write, let w = data, !pending.isEmpty {
            if op.segments >= 2 && !partial {
                // perform_cow with the guest data merged in (merge_cow): one cow_read per
                // region read (head..tail in one when the gap is at most 16 KiB), then
                // head + guest data + tail in one write of whole clusters (write_aio,
                // cow_write). A guest write has one buffer (qemu-io's writev aside).
                var out = events
                var raised: [BlkdebugEvent] = []
                for _ in pending { raised += [.cowRead, .readBackingAio] }
                out.insert(contentsOf: raised, at: w)
                let wa = w + raised.count
                if !out.contains(.cowWrite) { out.insert(.cowWrite, at: wa + 1) }
                pending.removeAll()
                return out
            }
            if op.segments == 1, partial, op.length == pending[0].length {
                // perform_cow without the guest data merged in (QEMU 7.2: encrypted images):
                // the data went out first, then one cow_read per region, then one write
                // per region into the cluster the data allocated (cow_write only; the
                // classifier's allocation guess for it does not apply).
                var raised: [BlkdebugEvent] = []
                for _ in pending { raised += [.cowRead, .readBackingAio] }
                cowWritesLeft = pending.count - 1
                pending.removeAll()
                return raised + [.cowWrite, .pwritev]
            }
        }
        if cowWritesLeft > 0, op.kind == .write, op.segments == 1, partial, data != nil {
            cowWritesLeft -= 1
            return [.cowWrite, .pwritev]
        }
        cowWritesLeft = 0
        guard !pending.isEmpty else { return events }
        if readByProgram { pending.removeAll(); return events }
        // A guest read (or copy-on-read) of clusters the overlay does not have: one
        // read_backing_aio per read task, before whatever the overlay does next.
        let raised = [BlkdebugEvent](repeating: .readBackingAio, count: pending.count)
        pending.removeAll()
        if events.first == .none { return [.none] + raised + events.dropFirst() }
        return raised + events
    }
}
