// The C ABI the shim calls (shim/include/blkfault_engine.h). Standard library,
// Synchronization and Glibc only: this code runs inside every wrapped process.
import BlkfaultEngine
import Glibc
import Synchronization
import CPreloadSupport

/// Reads the image through the real libc: the shim's guard is held while the engine runs.
struct FileReader: ImageReader, Sendable {
    let fd: Int32
    func read(offset: UInt64, count: Int) -> [UInt8]? {
        guard count >= 0 else { return nil }
        if count == 0 { return [] }
        // Read into the array's own storage: no zero fill, no copy of what was read
        // (~0.2 M instructions when a matched image attaches; issue 7).
        var failed = false
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 { if errno == EINTR { continue }; failed = true; break }
                if n == 0 { break }
                done += n
            }
            initialized = failed ? 0 : done
        }
        return failed ? nil : bytes
    }
    var size: UInt64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_size) : 0
    }
}

/// One followed image: its engine behind its own lock, since I/O arrives on QEMU's worker threads.
final class TrackedImage: Sendable {
    let path: String
    /// The engine and its one lock (LockedEngine's futex word): every use goes through `withEngine`.
    let engine: LockedEngine
    let reader: FileReader
    let bypassReported = Atomic<Bool>(false)
    /// BLKFAULT_TRACE's fd, or -1: fixed once the configuration is read.
    let traceFD: Int32
    /// blkfault's actions (Actions.swift); nil when the rule file has none.
    let actions: ActionState?
    /// BLKFAULT_SHARED_STATE (SharedState.swift); nil unless set.
    let shared: SharedState? = sharedState
    /// What this process saw done to the file, for the exit check (ExitCheck.swift).
    let witness: Witness
    /// The lock-free pre-filter of its guest data requests (Steady.swift); nil when a
    /// step is recorded or acted on, or for a backing file.
    nonisolated(unsafe) let steady: OpaquePointer?
    /// Nothing records a request's step (no trace) or acts on it (no actions, no shared
    /// state): the I/O path asks the engine only for the decision (ImageEngine.decide).
    let quiet: Bool
    /// The followed overlay this file is the backing file of (Backing.swift), and whether
    /// that is all it is followed for (it matched no target on its own).
    let backingOf: TrackedImage?
    let backingOnly: Bool
    /// Where in the overlay's backing chain it is (0: the overlay's backing file).
    let backingDepth: Int
    /// For a backing-only file: its fds the engine attached and not yet detached.
    let backingFDs = Atomic<Int>(0)

    init(path: String, engine: ImageEngine, reader: FileReader, traceFD: Int32, actions: ActionState? = nil,
         backingOf: TrackedImage? = nil, backingOnly: Bool = false, backingDepth: Int = 0) {
        self.path = path
        self.engine = LockedEngine(engine)
        self.reader = reader
        self.traceFD = traceFD
        self.actions = actions
        quiet = traceFD < 0 && actions == nil && shared == nil
        steady = quiet && backingOf == nil && !backingOnly ? blkfault_steady_new(steadyCounting ? 1 : 0) : nil
        witness = Witness(steady: steady)
        self.backingOf = backingOf
        self.backingOnly = backingOnly
        self.backingDepth = backingDepth
    }
}

/// Process-wide configuration, read at the first matching open.
struct Configuration: Sendable {
    var rules: RuleSet
    var model: ModelChoice
    var traceFD: Int32
    /// For rules with a probability (BLKFAULT_SEED or random).
    var seed: UInt64 = 0
}

let images = Mutex<[TrackedImage]>([])
/// The same images for the I/O path, read without a lock: slot i is written once,
/// before `publishedImages` counts it (release), and never changes after.
let imageSlots = 4096
/// Set at the first publication, under `images`' lock and before `publishedImages` counts
/// it: a global with a constant initial value needs no swift_once on every request, as
/// a lazily initialized one did (~12 instructions a request; issue 7).
nonisolated(unsafe) var imageTable: UnsafeMutablePointer<Unmanaged<TrackedImage>?>? = nil

func makeImageTable() -> UnsafeMutablePointer<Unmanaged<TrackedImage>?> {
    // Fresh zero pages (nil is all zero bits): initialize(repeating:) stored the 4,096
    // slots one by one, and glibc's calloc (which LLVM also makes of malloc + memset)
    // clears this size in its own loop: ~33,000 instructions at the first attach.
    let bytes = imageSlots * MemoryLayout<Unmanaged<TrackedImage>?>.stride
    let zeroed = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let zeroed, zeroed != MAP_FAILED else { fatal("out of memory") }
    return zeroed.bindMemory(to: Unmanaged<TrackedImage>?.self, capacity: imageSlots)
}
let publishedImages = Atomic<Int>(0)
let configuration = Mutex<Configuration?>(nil)

func env(_ name: String) -> String? {
    guard let v = getenv(name) else { return nil }
    return String(cString: v)
}

func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    let total = bytes.count
    var done = 0
    while done < total {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, total - done) }
        if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
        done += n
    }
}

/// Stops the program before it touches the image: a bad rule file or variable.
func fatal(_ message: String) -> Never {
    writeAll(2, "blkfault: " + message + "\n")
    _exit(1)
}

func loadConfiguration() -> Configuration {
    configuration.withLock { config in
        if let c = config { return c }
        var rules = RuleSet()
        if let path = env("BLKFAULT_CONFIG"), !path.isEmpty {
            do { rules = try RuleFile.load(path: path) } catch { fatal(String(describing: error)) }
        }
        var model = ModelChoice.qemu72
        if let m = env("BLKFAULT_MODEL"), !m.isEmpty {
            guard let choice = ModelChoice(rawValue: m) else {
                fatal("BLKFAULT_MODEL: unknown model '\(m)' (known: qemu-7.2, raw)")
            }
            model = choice
        }
        var traceFD: Int32 = -1
        if let path = env("BLKFAULT_TRACE"), !path.isEmpty {
            traceFD = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if traceFD < 0 { fatal("BLKFAULT_TRACE: cannot open '\(path)': " + String(cString: strerror(errno))) }
        }
        var c = Configuration(rules: rules, model: model, traceFD: traceFD)
        if rules.usesProbability {
            c.seed = runSeed()
            if traceFD >= 0 {
                writeAll(traceFD, "{\"pid\":\(getpid()),\"seed\":\(c.seed),\"note\":\"seed of the probability rules without their own (replay: BLKFAULT_SEED=\(c.seed))\"}\n")
            }
        }
        config = c
        return c
    }
}

@_cdecl("blkfault_engine_attach")
public func blkfaultEngineAttach(_ path: UnsafePointer<CChar>, _ fd: Int32) -> Int32 {
    let config = loadConfiguration()
    let name = String(cString: path)
    return images.withLock { list in
        // Once, under the lock, before any handle is published (the I/O path reads it).
        if Operation.currentBuffer == nil { Operation.currentBuffer = currentBuffer }
        let mode = fcntl(fd, F_GETFL)
        let writable = mode >= 0 && (mode & O_ACCMODE) != O_RDONLY
        // O_DIRECT: file-posix probes the new fd's alignment first (AlignmentProbe.swift).
        let direct = mode >= 0 && blkfault_flags_direct(mode) != 0
        if let i = list.firstIndex(where: { $0.path == name && !$0.backingOnly }) {
            list[i].withEngine { $0.noteOpen(writable: writable, direct: direct) }
            list[i].witness.attach(programFD: fd, reader: list[i].reader)
            return Int32(i)
        }
        // O_NONBLOCK: opening a FIFO target for reading must not wait for a writer.
        let readFD = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        let reader = FileReader(fd: readFD >= 0 ? readFD : fd)
        var engine = ImageEngine(rules: config.rules, file: reader, model: config.model, seed: config.seed)
        engine.noteOpen(writable: writable, direct: direct)
        engine.noteCommand(programCommand)
        if let reason = engine.rawReason, config.traceFD >= 0 {
            writeAll(config.traceFD, "{\"pid\":\(getpid()),\"image\":" + TraceLine.quote(name) + ",\"note\":" + TraceLine.quote("following as raw: " + reason) + "}\n")
        }
        if let reason = engine.rawReason, engine.degraded {
            // Once per image per process (later opens find it in the list): the program's
            // I/O goes on untouched, but qcow2 events will not be recognised on this file.
            writeAll(2, "blkfault: warning: \(name) has the qcow2 magic but cannot be modelled (\(reason)): "
                + "followed as raw, so only raw events (none, read_aio, write_aio, pwritev, pwritev_zero, pwritev_done) can fire\n")
        }
        let actions = config.rules.actionRules.isEmpty && !config.rules.injectRules.contains { $0.delayNs > 0 } ? nil
            : ActionState(losesUnsynced: config.rules.losesUnsynced, limit: unsyncedLimit())
        let backing = backingTarget(name)
        if let backing { followBacking(backing, reader: reader, programFD: fd) }
        let tracked = TrackedImage(path: name, engine: engine, reader: reader, traceFD: config.traceFD, actions: actions,
                                   backingOf: backing?.overlay, backingDepth: backing?.depth ?? 0)
        tracked.witness.attach(programFD: fd, reader: reader)
        registerBacking(of: tracked)
        return publish(tracked, in: &list)
    }
}

/// Adds a new image to the list (the caller holds `images`' lock) and, when it fits,
/// to the lock-free table the I/O path reads; returns its handle.
func publish(_ tracked: TrackedImage, in list: inout [TrackedImage]) -> Int32 {
    list.append(tracked)
    let handle = list.count - 1
    if handle < imageSlots {
        if let steady = tracked.steady { blkfault_steady_register(Int32(handle), steady) }
        let table = imageTable ?? makeImageTable()
        imageTable = table
        table[handle] = Unmanaged.passRetained(tracked) // kept for the process's life, like `list`
        publishedImages.store(handle + 1, ordering: .releasing)
    }
    return Int32(handle)
}

func image(_ handle: Int32) -> TrackedImage? {
    let h = Int(handle)
    if h >= 0 && h < publishedImages.load(ordering: .acquiring), let table = imageTable { return table[h]?.takeUnretainedValue() }
    return images.withLock { list in h >= 0 && h < list.count ? list[h] : nil }
}

/// `body(image(handle))` for the I/O path, without retaining the image: a published
/// slot holds its reference for the process's life (attach never releases it).
@inline(__always)
func withImage<R>(_ handle: Int32, otherwise: R, _ body: (TrackedImage) -> R) -> R {
    let h = Int(handle)
    if h >= 0 && h < publishedImages.load(ordering: .acquiring), let table = imageTable, let slot = table[h] {
        return slot._withUnsafeGuaranteedRef(body)
    }
    guard let image = image(handle) else { return otherwise }
    return body(image)
}

func operation(_ op: Int32, _ offset: Int64, _ length: Int64, _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32) -> Operation? {
    guard let kind = OperationKind(rawValue: op) else { return nil }
    var operation = Operation(kind, offset: UInt64(bitPattern: offset), length: UInt64(bitPattern: max(0, length)))
    operation.segments = Int(max(1, iovcnt))
    if let iov, iovcnt > 0 {
        // Captures nothing (no allocation): the buffers are this thread's current ones.
        blkfault_set_op_iov(iov, iovcnt)
        operation.bytes = { from, count in
            guard let iov = blkfault_get_op_iov() else { return [] }
            return gather(iov, Int(blkfault_get_op_iovcnt()), from: from, count: count)
        }
    } else {
        blkfault_set_op_iov(nil, 0)
    }
    return operation
}

/// `Operation.currentBuffer`: the buffer `operation(...).bytes` gathers from, when it is one.
private let currentBuffer: @convention(c) (UnsafeMutablePointer<Int>) -> UnsafeRawPointer? = { length in
    guard blkfault_get_op_iovcnt() == 1, let iov = blkfault_get_op_iov(), let base = iov[0].iov_base else { return nil }
    length.pointee = Int(iov[0].iov_len)
    return UnsafeRawPointer(base)
}

/// Copies `count` bytes starting `from` bytes into the iovec list.
func gather(_ iov: UnsafePointer<iovec>, _ iovcnt: Int, from: Int, count: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(max(0, count))
    var skip = from
    for i in 0..<iovcnt where out.count < count {
        let v = iov[i]
        guard let base = v.iov_base else { continue }
        let len = Int(v.iov_len)
        if skip >= len { skip -= len; continue }
        let take = min(len - skip, count - out.count)
        out.append(contentsOf: UnsafeRawBufferPointer(start: base + skip, count: take))
        skip = 0
    }
    return out
}

/// blkfault_engine_before, for the requests its C entry's steady pre-filter did not let
/// through (Sources/CPreloadSupport/engine_entry.c).
@_cdecl("blkfault_preload_before")
public func blkfaultEngineBefore(_ handle: Int32, _ fd: Int32, _ op: Int32, _ offset: Int64, _ length: Int64,
                                 _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32) -> Int32 {
    withImage(handle, otherwise: 0) { image in
        guard let operation = operation(op, offset, length, iov, iovcnt) else { return 0 }
        if let overlay = image.backingOf {
            noteBackingIO(image, overlay: overlay, operation)
            // Never failed; its after call would do nothing.
            if image.backingOnly { return performNoAfter }
        }
        if image.quiet {
            let (decision, needsAfter) = image.withEngine(touching: SteadyRequest(operation)) { $0.decide(operation, file: image.reader) }
            let code = decision.cValue
            // Nothing for blkfault_engine_after to do (the witness ignores reads and flushes).
            return code == 0 && !needsAfter ? performNoAfter : code
        }
        return before(image, fd: fd, operation, iov: iov, iovcnt: iovcnt)
    }
}

/// blkfault_engine.h's BLKFAULT_PERFORM_NO_AFTER: perform, and skip the after call.
let performNoAfter: Int32 = 0x10000

/// blkfault_engine_before with the step: traced, or with actions or shared state.
func before(_ image: TrackedImage, fd: Int32, _ operation: Operation, iov: UnsafePointer<iovec>?, iovcnt: Int32) -> Int32 {
    let (step, model) = image.withEngine { engine in
        if let shared = image.shared { shared.take(into: &engine) }
        defer { if let shared = image.shared { shared.leave(from: engine) } }
        return (engine.before(operation, file: image.reader), engine.modelName)
    }
    if image.traceFD >= 0 {
        let line = TraceLine(pid: getpid(), tid: blkfault_current_tid(), image: image.path, model: model, op: operation, step: step)
        writeAll(image.traceFD, line.json)
    }
    if let actions = image.actions { return carryOut(image, actions, fd: fd, operation, iov: iov, iovcnt: iovcnt, step) }
    return step.decision.cValue
}

@_cdecl("blkfault_engine_after")
public func blkfaultEngineAfter(_ handle: Int32, _ fd: Int32, _ op: Int32, _ offset: Int64, _ length: Int64,
                                _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32, _ result: Int64, _ error: Int32) {
    withImage(handle, otherwise: ()) { image in
        guard !image.backingOnly, var operation = operation(op, offset, length, iov, iovcnt) else { return }
        // A short read or write: only what was transferred is on disk / in the buffer.
        if (operation.kind == .read || operation.kind == .write) && result >= 0 { operation.length = UInt64(result) }
        after(image, operation, iov: iov, iovcnt: iovcnt, result: result)
    }
}

@inline(__always)
func after(_ image: TrackedImage, _ operation: Operation, iov: UnsafePointer<iovec>?, iovcnt: Int32, result: Int64) {
    image.withEngine { engine in
        if let shared = image.shared { shared.take(into: &engine) }
        _ = engine.after(operation, succeeded: result >= 0, file: image.reader)
        if let shared = image.shared { shared.leave(from: engine) }
    }
    image.witness.performed(operation.kind, offset: operation.offset, length: operation.length, succeeded: result >= 0,
                            reader: image.reader, bytes: operation.bytes)
    // After the engine learnt what the file holds: a [corrupt] alters only the buffer.
    if let actions = image.actions { finish(image, actions, operation, iov: iov, iovcnt: iovcnt, result: result) }
}

@_cdecl("blkfault_engine_detach")
public func blkfaultEngineDetach(_ handle: Int32, _ fd: Int32) {
    if let image = image(handle), image.backingOnly { backingClosed(image) }
}

/// The shim saw a way to the image around the calls it hooks (linux-aio, io_uring,
/// mmap, syscall()). Said once per image per process, on stderr and in the trace:
/// that I/O is not seen, so the trace is incomplete and rules cannot fire on it.
@_cdecl("blkfault_engine_bypass")
public func blkfaultEngineBypass(_ handle: Int32, _ what: UnsafePointer<CChar>) {
    guard let image = image(handle), !image.bypassReported.exchange(true, ordering: .relaxed) else { return }
    let how = String(cString: what)
    writeAll(2, "blkfault: warning: I/O on \(image.path) through \(how) bypasses blkfault: it is not seen, "
        + "traced or failed, so rules do not apply to it (blkfault sees libc read/write calls only; "
        + "for QEMU use aio=threads, qemu-io -i threads)\n")
    if image.traceFD >= 0 {
        writeAll(image.traceFD, "{\"pid\":\(getpid()),\"tid\":\(blkfault_current_tid()),\"image\":" + TraceLine.quote(image.path)
            + ",\"bypass\":" + TraceLine.quote(how) + ",\"note\":\"I/O through this way is not traced and no rule applies to it\"}\n")
    }
}
