/// Turns the I/O a program does on an image into the blkdebug events QEMU would
/// raise around it. `eventsBefore` gives the events raised since the previous
/// I/O, in QEMU's order (the last of them is the one the request follows);
/// `eventsAfter` the ones raised once the request finished.
public protocol EventClassifier {
    /// Whose behaviour the procedural events model, for the trace.
    var modelName: String { get }
    mutating func eventsBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent]
    /// `performed` is false when blkfault failed the request itself.
    mutating func eventsAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent]
}

/// A file that is not (or not readable as) qcow2: the events blkdebug raises
/// under a raw format node — none at open, read_aio/write_aio, and the generic
/// write events.
public struct RawClassifier: EventClassifier, Sendable {
    private var opened = false
    public init() {}
    public var modelName: String { "raw" }

    public mutating func eventsBefore(_ op: Operation, file: ImageReader) -> [BlkdebugEvent] {
        guard op.kind != .stat else { return [] }
        var events: [BlkdebugEvent] = []
        if !opened { events.append(.none); opened = true }
        switch op.kind {
        case .read: events.append(.readAio)
        case .write: events += [.writeAio, .pwritev]
        case .writeZeroes: events.append(.pwritevZero)
        case .discard, .flush, .truncate, .allocate, .stat: break
        }
        return events
    }

    public mutating func eventsAfter(_ op: Operation, performed: Bool, succeeded: Bool, file: ImageReader) -> [BlkdebugEvent] {
        op.kind == .write || op.kind == .writeZeroes ? [.pwritevDone] : []
    }
}
