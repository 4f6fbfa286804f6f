/// An overlay engine's side of its backing file (BackingReads.swift): the backing
/// file's I/O is not the overlay's, so it is never checked against the rules; its
/// data reads only decide which events the overlay's next request follows.
extension ImageEngine {
    /// The backing file this overlay's header names, if any (`file`: the overlay).
    public func backingFileName(file: ImageReader) -> BackingFileName? {
        guard let shadow else { return nil }
        return BackingFileName(header: shadow.header, file: file)
    }

    /// The program opened the overlay's backing file (`file`: the backing file).
    /// `writable`: opened for writing (qemu-img commit reopens it so).
    public mutating func followBacking(format: String?, file: ImageReader, writable: Bool = false) {
        if backing == nil { backing = BackingReads(format: format, file: file) }
        if writable { backing!.noteWriter() }
    }

    /// An operation on the backing file, before it is performed: it is always
    /// performed. The step says which events it holds for the overlay's next request.
    public mutating func backingOperation(_ op: Operation) -> Step {
        var step = Step()
        step.stateBefore = rules.state
        step.stateAfter = rules.state
        switch op.kind {
        case .read:
            if backing?.read(offset: op.offset, length: op.length) == true { step.held = [.readBackingAio] }
        case .write, .writeZeroes, .discard:
            backing?.noteWriter()
        case .flush, .truncate, .allocate:
            break
        }
        return step
    }

    mutating func resolveBacking(_ op: Operation, _ events: [BlkdebugEvent]) -> [BlkdebugEvent] {
        guard let b = backing, !b.idle, let cs = shadow?.clusterSize else { return events }
        return backing!.resolve(op, events, clusterSize: cs)
    }
}
