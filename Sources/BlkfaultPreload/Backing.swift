// Backing files of followed overlays: the shim asks about every file it does not
// target while an image is followed (blkfault_engine_attach_backing); the backing
// file of a followed qcow2 overlay gets a handle whose I/O goes to the overlay's
// engine as backing I/O (ImageEngine+Backing.swift), never checked against the rules.
import BlkfaultEngine
import Glibc
import Synchronization
import CPreloadSupport

/// A backing file some followed overlay names: where QEMU will open it.
struct BackingTarget: Sendable {
    /// Canonical path (realpath), compared with the opened fd's /proc/self/fd link.
    let path: String
    let overlay: TrackedImage
    let format: String?
    /// 0: the overlay's backing file; 1: that file's backing file; ...
    var depth = 0
}

let backingTargets = Mutex<[BackingTarget]>([])
/// Any backing target at all: the shim's question costs one load when none.
let anyBackingTarget = Atomic<Bool>(false)

/// The canonical form of a path, or the path itself when it does not resolve (yet).
func canonicalPath(_ path: String) -> String {
    guard let p = realpath(path, nil) else { return path }
    defer { free(p) }
    return String(cString: p)
}

/// Called once per new followed image: remembers the backing file its header names.
func registerBacking(of image: TrackedImage) {
    guard let name = image.withEngine({ $0.backingFileName(file: image.reader) }) else { return }
    let target = BackingTarget(path: canonicalPath(name.path(overlay: image.path)), overlay: image, format: name.format)
    backingTargets.withLock { $0.append(target) }
    anyBackingTarget.store(true, ordering: .releasing)
}

/// A backing file of the chain was opened: the file it names in turn (a qcow2 file's
/// header) belongs to the same overlay, one level down. Each file once.
func registerDeeper(than target: BackingTarget, path: String, reader: FileReader) {
    guard target.format == nil || target.format == "qcow2", target.depth < 15,
          let name = ImageEngine.backingFileName(ofQcow2: reader) else { return }
    let deeper = BackingTarget(path: canonicalPath(name.path(overlay: path)), overlay: target.overlay,
                               format: name.format, depth: target.depth + 1)
    backingTargets.withLock { list in
        if !list.contains(where: { $0.path == deeper.path }) { list.append(deeper) }
    }
}

/// The overlay whose backing file `path` is (the first that names it).
func backingTarget(_ path: String) -> BackingTarget? {
    guard anyBackingTarget.load(ordering: .acquiring) else { return nil }
    return backingTargets.withLock { list in list.first { $0.path == path } }
}

/// The overlay starts following the file: its format decides how its reads are told apart.
func followBacking(_ target: BackingTarget, reader: FileReader, programFD fd: Int32) {
    let mode = fcntl(fd, F_GETFL)
    let writable = mode >= 0 && (mode & O_ACCMODE) != O_RDONLY
    // `qemu-img rebase` reads the old backing file through a BlockBackend of its own on
    // the backing node (img_rebase's blk_old_backing), not through the overlay's node, so
    // those reads raise nothing on the overlay. Its I/O looks like a copy-on-read's; only
    // the command line tells them apart (the overlay's engine took it in noteCommand).
    target.overlay.withEngine {
        $0.followBacking(format: target.format, file: reader, writable: writable, depth: target.depth)
    }
}

/// The program's command line (/proc/self/cmdline), read once.
/// The arguments are cut at each NUL straight from the buffer read (no zero-filled chunk,
/// no array of slices: ~20 K instructions at the engine's start; issue 7, s8-7a).
let programCommand: ProgramCommand = {
    let fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return ProgramCommand(arguments: []) }
    defer { close(fd) }
    // As before: 4 KiB reads while less than 64 KiB was read.
    let limit = 1 << 16
    let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: limit + 4096)
    defer { buffer.deallocate() }
    var count = 0
    while count < limit {
        let n = read(fd, buffer + count, 4096)
        if n <= 0 { break }
        count += n
    }
    return ProgramCommand(commandLine: UnsafeBufferPointer(start: buffer, count: count))
}()

@_cdecl("blkfault_engine_attach_backing")
public func blkfaultEngineAttachBacking(_ fd: Int32) -> Int32 {
    guard anyBackingTarget.load(ordering: .acquiring) else { return -1 }
    var link = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/fd/\(fd)", &link, Int(PATH_MAX))
    guard n > 0 else { return -1 }
    let path = String(decoding: link[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let target = backingTarget(path) else { return -1 }
    let config = loadConfiguration()
    return images.withLock { list in
        if let i = list.firstIndex(where: { $0.path == path && $0.backingOnly }) {
            // Open already: this is a second, separate open of the file (qemu-img rebase
            // reads the old backing file through its own), not the overlay's backing node.
            guard list[i].backingFDs.add(1, ordering: .relaxed).oldValue == 0 else {
                list[i].backingFDs.subtract(1, ordering: .relaxed)
                return -1
            }
            followBacking(target, reader: list[i].reader, programFD: fd)
            return Int32(i)
        }
        let readFD = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        let reader = FileReader(fd: readFD >= 0 ? readFD : fd)
        followBacking(target, reader: reader, programFD: fd)
        // Its own engine is never asked: the handle only routes I/O to the overlay.
        let idle = ImageEngine(rules: RuleSet(), file: reader, model: .rawOnly)
        let tracked = TrackedImage(path: path, engine: idle, reader: reader, traceFD: config.traceFD,
                                   backingOf: target.overlay, backingOnly: true, backingDepth: target.depth)
        registerDeeper(than: target, path: path, reader: reader)
        tracked.backingFDs.store(1, ordering: .relaxed)
        return publish(tracked, in: &list)
    }
}

/// I/O on a backing file, before it is performed: the overlay's engine holds its data
/// reads for the overlay's next request; the trace shows it under the overlay's name.
func noteBackingIO(_ image: TrackedImage, overlay: TrackedImage, _ op: Operation) {
    let (step, model) = overlay.withEngine { ($0.backingOperation(op, depth: image.backingDepth), $0.modelName) }
    if overlay.traceFD >= 0 {
        var line = TraceLine(pid: getpid(), tid: blkfault_current_tid(), image: overlay.path, model: model, op: op, step: step)
        line.backing = image.path
        writeAll(overlay.traceFD, line.json)
    }
}

/// A backing-only file's fd was closed (or dup2'd over).
func backingClosed(_ image: TrackedImage) {
    if image.backingFDs.subtract(1, ordering: .relaxed).newValue < 0 { image.backingFDs.store(0, ordering: .relaxed) }
}
