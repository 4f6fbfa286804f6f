// The C ABI the shim calls (shim/include/blkfault_engine.h). Standard library,
// Synchronization and Glibc only: this code runs inside every wrapped process.
import BlkfaultEngine
import Glibc
import Synchronization
import CShim

/// Reads the image through the real libc: the shim's guard is held while the engine runs.
struct FileReader: ImageReader, Sendable {
    let fd: Int32
    func read(offset: UInt64, count: Int) -> [UInt8]? {
        guard count >= 0 else { return nil }
        if count == 0 { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            done += n
        }
        return Array(buffer[0..<done])
    }
    var size: UInt64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_size) : 0
    }
}

/// One followed image: its engine behind its own lock, since I/O arrives on QEMU's worker threads.
final class TrackedImage: Sendable {
    let path: String
    let engine: LockedEngine
    let reader: FileReader
    let bypassReported = Atomic<Bool>(false)
    /// BLKFAULT_TRACE's fd, or -1: fixed once the configuration is read.
    let traceFD: Int32

    init(path: String, engine: ImageEngine, reader: FileReader, traceFD: Int32) {
        self.path = path
        self.engine = LockedEngine(engine)
        self.reader = reader
        self.traceFD = traceFD
    }
}

/// Process-wide configuration, read at the first matching open.
struct Configuration: Sendable {
    var rules: RuleSet
    var model: ModelChoice
    var traceFD: Int32
}

let images = Mutex<[TrackedImage]>([])
/// The same images for the I/O path, read without a lock: slot i is written once,
/// before `publishedImages` counts it (release), and never changes after.
let imageSlots = 4096
nonisolated(unsafe) let imageTable: UnsafeMutablePointer<Unmanaged<TrackedImage>?> = {
    let t = UnsafeMutablePointer<Unmanaged<TrackedImage>?>.allocate(capacity: imageSlots)
    t.initialize(repeating: nil, count: imageSlots)
    return t
}()
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
        let c = Configuration(rules: rules, model: model, traceFD: traceFD)
        config = c
        return c
    }
}

@_cdecl("blkfault_engine_attach")
public func blkfaultEngineAttach(_ path: UnsafePointer<CChar>, _ fd: Int32) -> Int32 {
    let config = loadConfiguration()
    let name = String(cString: path)
    return images.withLock { list in
        let mode = fcntl(fd, F_GETFL)
        let writable = mode >= 0 && (mode & O_ACCMODE) != O_RDONLY
        if let i = list.firstIndex(where: { $0.path == name }) {
            list[i].engine.withLock { $0.noteOpen(writable: writable) }
            return Int32(i)
        }
        let readFD = open(path, O_RDONLY | O_CLOEXEC)
        let reader = FileReader(fd: readFD >= 0 ? readFD : fd)
        var engine = ImageEngine(rules: config.rules, file: reader, model: config.model)
        engine.noteOpen(writable: writable)
        if let reason = engine.rawReason, config.traceFD >= 0 {
            writeAll(config.traceFD, "{\"pid\":\(getpid()),\"image\":" + TraceLine.quote(name) + ",\"note\":\"following as raw: " + reason + "\"}\n")
        }
        let tracked = TrackedImage(path: name, engine: engine, reader: reader, traceFD: config.traceFD)
        list.append(tracked)
        let handle = list.count - 1
        if handle < imageSlots {
            imageTable[handle] = Unmanaged.passRetained(tracked) // kept for the process's life, like `list`
            publishedImages.store(handle + 1, ordering: .releasing)
        }
        return Int32(handle)
    }
}

func image(_ handle: Int32) -> TrackedImage? {
    let h = Int(handle)
    if h >= 0 && h < publishedImages.load(ordering: .acquiring) { return imageTable[h]?.takeUnretainedValue() }
    return images.withLock { list in h >= 0 && h < list.count ? list[h] : nil }
}

func operation(_ op: Int32, _ offset: Int64, _ length: Int64, _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32) -> Operation? {
    guard let kind = OperationKind(rawValue: op) else { return nil }
    var operation = Operation(kind, offset: UInt64(bitPattern: offset), length: UInt64(bitPattern: max(0, length)))
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

@_cdecl("blkfault_engine_before")
public func blkfaultEngineBefore(_ handle: Int32, _ fd: Int32, _ op: Int32, _ offset: Int64, _ length: Int64,
                                 _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32) -> Int32 {
    guard let image = image(handle), let operation = operation(op, offset, length, iov, iovcnt) else { return 0 }
    let (step, model) = image.engine.withLock { engine in
        (engine.before(operation, file: image.reader), engine.modelName)
    }
    if image.traceFD >= 0 {
        let line = TraceLine(pid: getpid(), tid: blkfault_current_tid(), image: image.path, model: model, op: operation, step: step)
        writeAll(image.traceFD, line.json)
    }
    return step.decision.cValue
}

@_cdecl("blkfault_engine_after")
public func blkfaultEngineAfter(_ handle: Int32, _ fd: Int32, _ op: Int32, _ offset: Int64, _ length: Int64,
                                _ iov: UnsafePointer<iovec>?, _ iovcnt: Int32, _ result: Int64, _ error: Int32) {
    guard let image = image(handle), var operation = operation(op, offset, length, iov, iovcnt) else { return }
    // A short read or write: only what was transferred is on disk / in the buffer.
    if (operation.kind == .read || operation.kind == .write) && result >= 0 { operation.length = UInt64(result) }
    image.engine.withLock { engine in
        _ = engine.after(operation, succeeded: result >= 0, file: image.reader)
    }
}

@_cdecl("blkfault_engine_detach")
public func blkfaultEngineDetach(_ handle: Int32, _ fd: Int32) {}

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
