/// One of blkfault's action sections ([crash], [torn-write], [corrupt], [break]): aimed
/// like an [inject-error] rule, it acts on the request during which its event is raised.
public struct ActionRule: Sendable, Equatable {
    public var action: Action
    /// nil only for a [corrupt] of a header field, which aims at reads of the header.
    public var event: BlkdebugEvent?
    public var state: Int32
    /// Byte offset (`sector` × 512) a request must cover; -1 = any request.
    public var sectorOffset: Int64
    public var iotypeMask: IOTypeMask
    public var once: Bool
    public var trigger: Trigger?
    /// Line of the section header.
    public var line: Int
    public var id: String?

    public init(action: Action, event: BlkdebugEvent?, state: Int32 = 0, sectorOffset: Int64 = -1,
                iotypeMask: IOTypeMask = .blkdebugDefault, once: Bool = false, trigger: Trigger? = nil,
                line: Int = 0, id: String? = nil) {
        self.action = action; self.event = event; self.state = state; self.sectorOffset = sectorOffset
        self.iotypeMask = iotypeMask; self.once = once; self.trigger = trigger; self.line = line; self.id = id
    }
}

public enum Action: Sendable, Equatable {
    /// SIGKILL before or after the request reaches the file.
    case crash(after: Bool, loseUnsynced: Bool)
    /// Only the first `keep` bytes of the write reach the file.
    case tornWrite(keep: UInt64, then: TornEnding, loseUnsynced: Bool)
    /// Alter the buffer the read returns.
    case corrupt(CorruptTarget)
    /// Stop the thread until resumed.
    case breakpoint(tag: String)

    /// The section it came from, as the trace names the action.
    public var name: String {
        switch self {
        case .crash: "crash"
        case .tornWrite: "torn-write"
        case .corrupt: "corrupt"
        case .breakpoint: "break"
        }
    }
}

public enum TornEnding: Sendable, Equatable {
    case crash
    case fail(errno: Int32)
}

/// What a [corrupt] rule changes in the bytes read.
public enum CorruptTarget: Sendable, Equatable {
    /// XOR `mask` into the byte `offset` bytes into the read.
    case byte(offset: UInt64, xor: UInt8)
    /// Replace entry `index` of the table read (its width follows from the event).
    case entry(index: UInt64, value: UInt64)
    /// Replace a header field (wherever a read covers it).
    case field(Qcow2HeaderField, value: UInt64)
}

/// A change to the buffer of one read: bytes to put `offset` bytes into it.
public struct BufferPatch: Sendable, Equatable {
    public var offset: UInt64
    public var bytes: [UInt8]
    /// XOR the bytes in rather than store them.
    public var xor: Bool

    public init(offset: UInt64, bytes: [UInt8], xor: Bool) {
        self.offset = offset; self.bytes = bytes; self.xor = xor
    }
}
