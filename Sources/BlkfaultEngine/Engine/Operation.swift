/// What a program did to an image file, as the shim saw it (values match `enum blkfault_op`).
public enum OperationKind: Int32, Sendable {
    /// `stat`: fstat of the image (no request of blkdebug's; QEMU's metadata-preallocation check).
    case read = 0, write, writeZeroes, discard, flush, truncate, allocate, stat

    public var name: String {
        switch self {
        case .read: return "read"
        case .write: return "write"
        case .writeZeroes: return "write-zeroes"
        case .discard: return "discard"
        case .flush: return "flush"
        case .truncate: return "truncate"
        case .allocate: return "allocate"
        case .stat: return "stat"
        }
    }

    /// The blkdebug iotype a request of this kind is checked as; nil = blkdebug never checks it.
    public var ioType: IOType? {
        switch self {
        case .read: return .read
        case .write: return .write
        case .writeZeroes: return .writeZeroes
        case .discard: return .discard
        case .flush: return .flush
        case .truncate, .allocate, .stat: return nil
        }
    }
}

/// One operation on an image file. `bytes` gathers part of the written (or, after a
/// read, the read) data; the engine calls it only for metadata, never for guest data.
public struct Operation {
    public var kind: OperationKind
    public var offset: UInt64
    public var length: UInt64
    public var bytes: ((_ from: Int, _ count: Int) -> [UInt8])?
    /// How many buffers the call carried (iovcnt): a copy-on-write's merged write is
    /// head + guest data + tail, three or more (BackingReads.swift).
    public var segments = 1

    public init(_ kind: OperationKind, offset: UInt64 = 0, length: UInt64 = 0,
                bytes: ((_ from: Int, _ count: Int) -> [UInt8])? = nil) {
        self.kind = kind; self.offset = offset; self.length = length; self.bytes = bytes
    }

    /// Convenience for tests and replays: the data is a plain array.
    public init(_ kind: OperationKind, offset: UInt64, data: [UInt8]) {
        self.init(kind, offset: offset, length: UInt64(data.count)) { from, count in
            Array(data[from..<min(data.count, from + count)])
        }
    }

    var end: UInt64 { offset &+ length }

    /// Set by the preload: this thread's current call's buffer when it carried one
    /// (iovcnt 1; its length through the argument), the buffer `bytes` gathers from. Metadata
    /// is then learnt in place, without a copy. A hook, not a field: a larger `Operation` is
    /// copied out of line on every request (+270 instructions per read in qemu-img bench).
    nonisolated(unsafe) public static var currentBuffer: (@convention(c) (UnsafeMutablePointer<Int>) -> UnsafeRawPointer?)?

    /// `body` over the first `count` bytes of the data (fewer if the call carried fewer):
    /// in place from the preload's current buffer, else gathered by `bytes`; nil without `bytes`.
    @inline(__always)
    func withBytes<R>(count: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        guard let bytes else { return nil }
        var length = 0
        if segments == 1, let current = Operation.currentBuffer, let base = current(&length) {
            return body(UnsafeRawBufferPointer(start: base, count: min(max(0, count), length)))
        }
        return bytes(0, count).withUnsafeBytes(body)
    }
}

/// What the shim must do with an operation.
public enum Decision: Equatable, Sendable {
    case perform
    /// Do not perform; fail with this errno.
    case fail(errno: Int32)
    /// Do not perform; report success (blkdebug's negative errno).
    case pretendSuccess
    /// blkfault [crash]: SIGKILL before the request reaches the file.
    case crash(loseUnsynced: Bool)
    /// blkfault [torn-write]: only the first `keep` bytes reach the file, then `then`.
    case torn(keep: UInt64, then: TornEnding, loseUnsynced: Bool)

    /// The value `blkfault_engine_before` returns (crash and torn are carried out by the preload).
    public var cValue: Int32 {
        switch self {
        case .perform: return 0
        case .fail(let e): return e
        case .pretendSuccess: return -1
        case .crash: return 0
        case .torn(_, .fail(let e), _): return e
        case .torn(_, .crash, _): return 0
        }
    }
}
