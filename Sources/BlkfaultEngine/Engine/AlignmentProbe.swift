/// file-posix's O_DIRECT alignment probe (raw_probe_alignment). At each open of an image
/// with cache=none or directsync (`qemu-io -t none`, parity workload dnone), unless the
/// file system takes any alignment (NFS), file-posix reads offset 0 of the new fd itself
/// to find what the kernel accepts:
/// 1. the request size, unless the device tells it (a block device, XFS): reads of 1,
///    512, 1024, 2048, 4096 bytes until one succeeds (EINVAL: too small);
/// 2. the buffer alignment: reads of max(4096, page size) bytes into buffers offset by
///    1, 512, 1024, 2048, 4096 bytes from a page until one succeeds.
/// These reads go to the fd directly, not through a block node: blkdebug above the file
/// neither checks nor counts them, and its `none` rules meet qcow2's header read first.
/// The engine passes them through unseen. Its test is the shape: a freshly opened O_DIRECT
/// fd whose first reads are at offset 0 with those lengths; any other operation but an
/// fstat ends it. (A raw image's guest read of exactly 4096 bytes at 0 as the very first
/// I/O, on NFS, would be taken for step 2: the one shape it cannot tell apart.)
struct AlignmentProbe: Sendable {
    private enum Phase: Sendable, Equatable {
        case off
        /// The fd was just opened: the next read shows which step runs.
        case opened
        /// Step 1, its last read that many bytes.
        case requestSize(UInt64)
        /// Step 2, `tries` reads of `length` bytes done (length 0: none yet).
        case bufferAlignment(length: UInt64, tries: Int)
    }
    private var phase = Phase.off
    /// The last read decided was one of the probe's: its outcome moves the phase on.
    private var inFlight = false

    /// The largest of step 1's sizes (QEMU's MAX_BLOCKSIZE) and the least of step 2's.
    private static let maxBlockSize: UInt64 = 4096

    var isActive: Bool { phase != .off }

    /// An fd of the image was opened with O_DIRECT.
    mutating func opened() {
        phase = .opened
        inFlight = false
    }

    /// Whether `op`, about to be decided, is one of the probe's reads; if it is not,
    /// the probe is over.
    mutating func claims(_ op: Operation) -> Bool {
        // file-posix's fstat of the new fd (its file type) comes before the probe.
        if op.kind == .stat { return false }
        inFlight = false
        let n = op.length
        let powerOfTwo = n != 0 && n & (n - 1) == 0
        guard op.kind == .read, op.offset == 0 else { phase = .off; return false }
        switch phase {
        case .off:
            return false
        case .opened:
            if n == 1 { phase = .requestSize(1) }
            else if powerOfTwo && n >= Self.maxBlockSize { phase = .bufferAlignment(length: n, tries: 0) }
            else { phase = .off; return false }
        case .requestSize(let last):
            guard powerOfTwo, n > last, n >= 512, n <= Self.maxBlockSize else { phase = .off; return false }
            phase = .requestSize(n)
        case .bufferAlignment(let length, let tries):
            let fits = length == 0 ? powerOfTwo && n >= Self.maxBlockSize : n == length
            guard fits, tries < 5 else { phase = .off; return false }
            phase = .bufferAlignment(length: n, tries: tries)
        }
        inFlight = true
        return true
    }

    /// The outcome of the read `claims` took (false if it took none): a step ends at its
    /// first read that succeeds, or after its last size / try.
    mutating func finished(succeeded: Bool) -> Bool {
        guard inFlight else { return false }
        inFlight = false
        switch phase {
        case .requestSize(let last):
            if succeeded || last >= Self.maxBlockSize { phase = .bufferAlignment(length: 0, tries: 0) }
        case .bufferAlignment(let length, let tries):
            phase = succeeded || tries + 1 >= 5 ? .off : .bufferAlignment(length: length, tries: tries + 1)
        case .off, .opened:
            break
        }
        return true
    }
}
