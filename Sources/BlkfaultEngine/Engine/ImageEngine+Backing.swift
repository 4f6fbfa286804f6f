/// An overlay engine's side of its backing file (BackingReads.swift): the backing
/// file's I/O is not the overlay's, so it is never checked against the rules; its
/// data reads only decide which events the overlay's next request follows.
extension ImageEngine {
    /// The backing file this overlay's header names, if any (`file`: the overlay).
    public func backingFileName(file: ImageReader) -> BackingFileName? {
        guard let shadow else { return nil }
        return BackingFileName(header: shadow.header, file: file)
    }

    /// The backing file a qcow2 file of the chain names, if any (read from its header).
    public static func backingFileName(ofQcow2 file: ImageReader) -> BackingFileName? {
        guard let first = file.read(offset: 0, count: Qcow2Header.readLength),
              var header = try? Qcow2Header(bytes: first) else { return nil }
        if let cluster0 = file.read(offset: 0, count: Int(min(header.clusterSize, 1 << 16))) { header.parseExtensions(cluster0: cluster0) }
        return BackingFileName(header: header, file: file)
    }

    /// The program opened a file of the overlay's backing chain (`file`; `depth` 0: the
    /// overlay's backing file, 1: that file's backing file, ...). `writable`: opened for
    /// writing (qemu-img commit reopens it so).
    /// A program that reads the chain itself, not through the overlay (qemu-img rebase,
    /// `noteCommand`), raises nothing on the overlay with those reads.
    public mutating func followBacking(format: String?, file: ImageReader, writable: Bool = false, depth: Int = 0) {
        if backing == nil { backing = BackingReads() }
        followsBacking = true
        backing!.follow(depth: depth, format: format, file: file)
        if writable { backing!.noteWriter(depth: depth) }
        if readsBackingItself { backing!.readByProgram = true }
    }

    /// An operation on a file of the backing chain, before it is performed: it is
    /// always performed. The step says which events it holds for the overlay's next request.
    public mutating func backingOperation(_ op: Operation, depth: Int = 0) -> Step {
        var step = Step()
        step.stateBefore = rules.state
        step.stateAfter = rules.state
        switch op.kind {
        case .read:
            if backing?.read(offset: op.offset, length: op.length, depth: depth) == true { step.held = [.readBackingAio] }
        case .write, .writeZeroes, .discard:
            backing?.noteWriter(depth: depth)
        case .flush, .truncate, .allocate, .stat:
            break
        }
        return step
    }

    mutating func resolveBacking(_ op: Operation, _ events: [BlkdebugEvent]) -> [BlkdebugEvent] {
        guard let b = backing, !b.idle, let cs = shadow?.clusterSize else { return events }
        return backing!.resolve(op, events, clusterSize: cs)
    }
}
