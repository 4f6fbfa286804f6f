/// What blkfault's actions add to a request beyond blkdebug's perform / fail: done by
/// the preload before the request (delay, break) and after it (corrupt, crash after).
public struct Effects: Sendable {
    /// Wait this long first (delay-ns).
    public var delayNs: UInt64 = 0
    /// Stop the thread at this breakpoint first.
    public var breakTag: String?
    /// Alter the read's buffer after the read, in this order.
    public var patches: [BufferPatch] = []
    /// SIGKILL after the request; the value says whether unsynced writes are lost.
    public var crashAfter: Bool?
    /// The action rules that acted, for the trace.
    public var taken: [TakenAction] = []
    /// A torn write of an L2 table: the entries it changes that will not reach the file
    /// (the prediction of what the image will lack).
    public var lostL2Entries: [LostL2Entry] = []

    public var isEmpty: Bool { delayNs == 0 && breakTag == nil && patches.isEmpty && crashAfter == nil && taken.isEmpty }
    /// Something for the preload to do after the request.
    public var hasAfterWork: Bool { !patches.isEmpty || crashAfter != nil }
}

/// One action rule acting, as the trace shows it.
public struct TakenAction: Sendable {
    public var action: Action
    public var line: Int
    public var choice: Choice
    /// For [corrupt]: where in the buffer.
    public var patch: BufferPatch?
}

/// An L2 entry a torn write would have changed but does not reach the file.
public struct LostL2Entry: Sendable, Equatable {
    /// The guest offset the entry maps.
    public var guestOffset: UInt64
    /// What the file keeps.
    public var onDisk: UInt64
    /// What the program wrote.
    public var written: UInt64

    public init(guestOffset: UInt64, onDisk: UInt64, written: UInt64) {
        self.guestOffset = guestOffset; self.onDisk = onDisk; self.written = written
    }
}
