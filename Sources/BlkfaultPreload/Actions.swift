// Carries out blkfault's actions beyond blkdebug's fail/perform: delay, break, crash,
// torn writes, read-buffer corruption, and the pre-image journal that lets a crash
// model a power loss. Nothing here runs unless the rule file has such rules.
import BlkfaultEngine
import Glibc
import Synchronization
import CPreloadSupport

/// What must happen after a request, kept between before() and after() of one thread.
struct AfterWork: Sendable {
    var patches: [BufferPatch] = []
    var crashAfter: Bool?
    /// A write on an O_SYNC/O_DSYNC fd: once done, it is a sync point.
    var syncingWrite = false
}

/// The per-image state of the actions; absent when the rule file has no action rule.
final class ActionState: Sendable {
    /// Some rule has lose-unsynced: every write's pre-image goes to the journal.
    let losesUnsynced: Bool
    /// Pre-images since the last flush.
    let journal: Mutex<UnsyncedWrites>
    let pending = Mutex<[Int32: AfterWork]>([:])
    let pendingCount = Atomic<Int>(0)

    init(losesUnsynced: Bool, limit: Int) {
        self.losesUnsynced = losesUnsynced
        journal = Mutex(UnsyncedWrites(limit: limit))
    }
}

/// BLKFAULT_UNSYNCED_LIMIT (bytes), else 256 MiB.
func unsyncedLimit() -> Int {
    guard let text = env("BLKFAULT_UNSYNCED_LIMIT"), !text.isEmpty else { return UnsyncedWrites.defaultLimit }
    guard let n = Int(text), n >= 0 else { fatal("BLKFAULT_UNSYNCED_LIMIT: '\(text)' is not a number of bytes") }
    return n
}

/// BLKFAULT_SEED, else a fresh random seed (written to the trace, so the run can be replayed).
func runSeed() -> UInt64 {
    if let text = env("BLKFAULT_SEED"), !text.isEmpty {
        guard let n = UInt64(text) else { fatal("BLKFAULT_SEED: '\(text)' is not a number from 0 to 2^64-1") }
        return n
    }
    var seed: UInt64 = 0
    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    let got = fd >= 0 ? withUnsafeMutableBytes(of: &seed) { read(fd, $0.baseAddress, 8) } : -1
    if fd >= 0 { close(fd) }
    if got != 8 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        seed = UInt64(bitPattern: Int64(ts.tv_nsec)) ^ (UInt64(getpid()) << 32)
    }
    return seed
}

func note(_ image: TrackedImage, _ fields: String) {
    guard image.traceFD >= 0 else { return }
    writeAll(image.traceFD, "{\"pid\":\(getpid()),\"tid\":\(blkfault_current_tid()),\"image\":" + TraceLine.quote(image.path) + "," + fields + "}\n")
}

/// The slow path of blkfault_engine_before: the step has actions, or writes are journaled.
func carryOut(_ image: TrackedImage, _ state: ActionState, fd: Int32, _ op: Operation,
              iov: UnsafePointer<iovec>?, iovcnt: Int32, _ step: Step) -> Int32 {
    let effects = step.effects
    if effects.delayNs > 0 {
        var ts = timespec(tv_sec: Int(effects.delayNs / 1_000_000_000), tv_nsec: Int(effects.delayNs % 1_000_000_000))
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
    }
    if let tag = effects.breakTag { stopAtBreak(tag: tag, image: image) }
    switch step.decision {
    case .crash(let lose):
        crash(image, state, loseUnsynced: lose, why: "crash before the request")
    case .torn(let keep, let then, let lose):
        guard let iov else { return step.decision.cValue }
        let prefix = gather(iov, Int(iovcnt), from: 0, count: Int(keep))
        if case .crash = then {
            // Power loss in the middle of this write: earlier unsynced writes are lost,
            // the sectors that made it of this one stay.
            crash(image, state, loseUnsynced: lose, why: "torn write: \(prefix.count) of \(op.length) bytes reached the file") {
                writeAt(fd, prefix, offset: op.offset)
            }
        }
        journal(image, state, fd: fd, op)
        writeAt(fd, prefix, offset: op.offset)
        // The exit check must know the prefix came from blkfault, not from around it.
        image.witness.performed(.write, offset: op.offset, length: UInt64(prefix.count), succeeded: true,
                                reader: image.reader, bytes: { from, count in Array(prefix[from..<(from + count)]) })
        return step.decision.cValue
    case .perform:
        var work = AfterWork(patches: effects.patches, crashAfter: effects.crashAfter)
        if state.losesUnsynced {
            journal(image, state, fd: fd, op)
            if op.kind == .write, fcntl(fd, F_GETFL) & O_DSYNC != 0 { work.syncingWrite = true }
        }
        if !work.patches.isEmpty || work.crashAfter != nil || work.syncingWrite {
            let tid = blkfault_current_tid()
            state.pending.withLock { $0[tid] = work }
            state.pendingCount.add(1, ordering: .relaxed)
        }
        return 0
    case .fail, .pretendSuccess:
        return step.decision.cValue
    }
}

/// The slow path of blkfault_engine_after.
func finish(_ image: TrackedImage, _ state: ActionState, _ op: Operation, iov: UnsafePointer<iovec>?, iovcnt: Int32, result: Int64) {
    if state.losesUnsynced, op.kind == .flush, op.offset == 0, op.length == 0, result >= 0 {
        state.journal.withLock { $0.synced() }
    }
    guard state.pendingCount.load(ordering: .relaxed) > 0 else { return }
    let tid = blkfault_current_tid()
    guard let work = state.pending.withLock({ $0.removeValue(forKey: tid) }) else { return }
    state.pendingCount.subtract(1, ordering: .relaxed)
    if work.syncingWrite, result >= 0 { state.journal.withLock { $0.synced() } }
    if let iov, result > 0 {
        for patch in work.patches { apply(patch, iov, Int(iovcnt), length: UInt64(result)) }
    }
    if let lose = work.crashAfter { crash(image, state, loseUnsynced: lose, why: "crash after the request") }
}

/// Alters the read buffer (never the file).
func apply(_ patch: BufferPatch, _ iov: UnsafePointer<iovec>, _ iovcnt: Int, length: UInt64) {
    var position: UInt64 = 0
    for (k, byte) in patch.bytes.enumerated() {
        let target = patch.offset + UInt64(k)
        guard target < length else { return }
        position = 0
        for i in 0..<iovcnt {
            let v = iov[i]
            let len = UInt64(v.iov_len)
            if target < position + len, let base = v.iov_base {
                let p = base.advanced(by: Int(target - position)).assumingMemoryBound(to: UInt8.self)
                p.pointee = patch.xor ? p.pointee ^ byte : byte
                break
            }
            position += len
        }
    }
}

/// Keeps what a write, write-zeroes, discard or truncate is about to overwrite.
func journal(_ image: TrackedImage, _ state: ActionState, fd: Int32, _ op: Operation) {
    guard state.losesUnsynced else { return }
    let size = image.reader.size
    var start = op.offset, end = op.offset &+ op.length
    switch op.kind {
    case .write, .writeZeroes, .discard: break
    case .truncate: (start, end) = (op.offset, size)
    case .allocate: (start, end) = (0, 0)
    default: return
    }
    end = min(end, size)
    let length = end > start ? end - start : 0
    state.journal.withLock { j in
        let wasOver = j.overflowed
        guard j.admits(length) else {
            j.record(offset: 0, bytes: [], fileSize: size)
            if !wasOver {
                let message = "lose-unsynced: more than \(j.limit) bytes written to \(image.path) since its last flush; "
                    + "pre-images are no longer kept (BLKFAULT_UNSYNCED_LIMIT), so a crash before the next flush will lose nothing"
                writeAll(2, "blkfault: warning: " + message + "\n")
                note(image, "\"note\":" + TraceLine.quote(message))
            }
            return
        }
        let bytes = length > 0 ? (image.reader.read(offset: start, count: Int(length)) ?? []) : []
        j.record(offset: start, bytes: bytes, fileSize: size)
    }
}

/// Power loss: puts back every pre-image, newest first, and the size at the last flush.
func undo(_ j: UnsyncedWrites, _ image: TrackedImage) {
    if j.overflowed {
        let message = "lose-unsynced: over the \(j.limit)-byte bound since the last flush; nothing undone"
        writeAll(2, "blkfault: " + message + "\n")
        note(image, "\"note\":" + TraceLine.quote(message))
        return
    }
    let fd = open(image.path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else {
        writeAll(2, "blkfault: lose-unsynced: cannot open \(image.path) to undo writes: \(String(cString: strerror(errno)))\n")
        return
    }
    var bytes = 0
    for p in j.preImages.reversed() {
        writeAt(fd, p.bytes, offset: p.offset)
        bytes += p.bytes.count
    }
    if let size = j.sizeAtFlush { _ = ftruncate(fd, off_t(size)) }
    close(fd)
    note(image, "\"power_loss\":{\"undone_writes\":\(j.preImages.count),\"undone_bytes\":\(bytes)"
        + (j.sizeAtFlush.map { ",\"size\":\($0)" } ?? "") + "}")
}

/// SIGKILL, after undoing unsynced writes if asked and running `last` (a torn write's
/// prefix). The journal stays locked until the process is gone, so no other thread's
/// write can be journaled, and performed, after the undo.
func crash(_ image: TrackedImage, _ state: ActionState, loseUnsynced: Bool, why: String, last: () -> Void = {}) -> Never {
    func die() -> Never {
        last()
        note(image, "\"crash\":" + TraceLine.quote(why) + ",\"signal\":\"SIGKILL\"")
        kill(getpid(), SIGKILL)
        _exit(137)
    }
    if loseUnsynced, state.losesUnsynced {
        state.journal.withLock { j -> Void in
            undo(j, image)
            die()
        }
    }
    die()
}

func writeAt(_ fd: Int32, _ bytes: [UInt8], offset: UInt64) {
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done)) }
        if n < 0 { if errno == EINTR { continue }; return }
        if n == 0 { return }
        done += n
    }
}
