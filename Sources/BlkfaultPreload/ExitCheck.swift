// The exit-time consistency check: what this process saw done to an image (its size,
// the bytes of its qcow2 header and L1 table) against the file at exit. A difference
// means I/O reached the image some way blkfault does not hook (mmap stores, raw
// system calls, linux-aio, io_uring, a path that did not match) or another process
// wrote it: either way rules did not apply to it, and saying so beats staying silent.
import BlkfaultEngine
import Glibc
import Synchronization
import CPreloadSupport

/// A copy of some bytes of the image, kept equal to the file by replaying every write
/// the engine saw into it.
struct WatchedRegion: Sendable {
    var name: String
    var offset: UInt64
    var bytes: [UInt8]
    /// False once a write we could not read the bytes of (copy_file_range) touched it.
    var verifiable = true

    var end: UInt64 { offset + UInt64(bytes.count) }
}

/// What one process expects of one image; nil fields mean "not checked".
struct WitnessState: Sendable {
    var pid: pid_t
    var device: UInt64
    var inode: UInt64
    var size: UInt64
    var regions: [WatchedRegion]
}

/// Bounds on what is copied, so the check stays cheap for big images.
enum WitnessLimits {
    static let header = 4096
    static let l1 = 1 << 20
}

final class Witness: Sendable {
    let state = Mutex<WitnessState?>(nil)
    /// The image's steady pre-filter, told what a skipped write must leave alone.
    nonisolated(unsafe) let steady: OpaquePointer?

    init(steady: OpaquePointer? = nil) { self.steady = steady }

    /// Tells the pre-filter what `s` watches (its lock held): a write it lets through
    /// must not change the expected size or a watched region.
    private func publish(_ s: WitnessState?) {
        guard let steady else { return }
        guard let s else { return blkfault_steady_witness(steady, 0, 0, .max, .max, .max, .max) }
        guard s.regions.count <= 2 else { return blkfault_steady_witness(steady, 2, 0, .max, .max, .max, .max) }
        // The two regions, or .max for one not there (no array of pairs: its tuple metadata
        // cost the engine's start ~9 K instructions; issue 7, s8-7a).
        let (a, b) = s.regions.count > 0 ? (s.regions[0].offset, s.regions[0].end) : (.max, .max)
        let (c, d) = s.regions.count > 1 ? (s.regions[1].offset, s.regions[1].end) : (.max, .max)
        blkfault_steady_witness(steady, 1, s.size, a, b, c, d)
    }
    /// Differences found before exit (at a later open of the same path), reported at exit.
    let pending = Mutex<[String]>([])
    let reported = Atomic<Bool>(false)

    /// Takes the image's current state as the expectation, first checking the old one
    /// when the same path is opened again. An image emptied since (an open with O_TRUNC)
    /// is not a bypass.
    func attach(programFD fd: Int32, reader: FileReader) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        var rst = stat()
        // The engine's reader is the file opened at first attach; if the path now names
        // another file, its bytes are not this file's: no expectation.
        guard fstat(reader.fd, &rst) == 0, rst.st_dev == st.st_dev, rst.st_ino == st.st_ino else {
            state.withLock { $0 = nil; publish(nil) }
            return
        }
        let size = UInt64(st.st_size)
        if size > 0, let found = differences(reader: reader) {
            pending.withLock { $0.append(contentsOf: found) }
        }
        var regions: [WatchedRegion] = []
        let headerBytes = reader.read(offset: 0, count: Int(min(size, UInt64(WitnessLimits.header)))) ?? []
        if !headerBytes.isEmpty { regions.append(WatchedRegion(name: "header", offset: 0, bytes: headerBytes)) }
        if let header = try? Qcow2Header(bytes: reader.read(offset: 0, count: Qcow2Header.readLength) ?? []),
           header.l1TableOffset > 0, header.l1TableOffset < size {
            let length = min(UInt64(header.l1Size) * 8, UInt64(WitnessLimits.l1), size - header.l1TableOffset)
            if let l1 = reader.read(offset: header.l1TableOffset, count: Int(length)), !l1.isEmpty {
                regions.append(WatchedRegion(name: "L1 table", offset: header.l1TableOffset, bytes: l1))
            }
        }
        state.withLock {
            $0 = WitnessState(pid: getpid(), device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: size, regions: regions)
            publish($0)
        }
    }

    /// A performed operation, as blkfault_engine_after reports it. `bytes(from, count)`
    /// gives a write's data; nil when the call has no buffer (copy_file_range).
    func performed(_ kind: OperationKind, offset: UInt64, length: UInt64, succeeded: Bool,
                   reader: FileReader, bytes: ((Int, Int) -> [UInt8])?) {
        guard succeeded else { return }
        switch kind {
        case .read, .flush: return
        default: break
        }
        // The size after a fallocate depends on FALLOC_FL_KEEP_SIZE, which the engine is
        // not told: ask the file (these are rare).
        let statSize: UInt64? = (kind == .writeZeroes || kind == .discard || kind == .allocate) ? reader.size : nil
        // Changed in place (`s!`): a copy taken out and stored back retains every region's bytes.
        state.withLock { s in
            defer { publish(s) }
            guard s != nil, offset != UInt64.max else { return }
            switch kind {
            case .write:
                s!.size = max(s!.size, offset + length)
                for i in s!.regions.indices {
                    let r = (offset: s!.regions[i].offset, end: s!.regions[i].end)
                    let lo = max(r.offset, offset), hi = min(r.end, offset + length)
                    guard lo < hi else { continue }
                    if let bytes {
                        let data = bytes(Int(lo - offset), Int(hi - lo))
                        if data.count == Int(hi - lo) {
                            s!.regions[i].bytes.replaceSubrange(Int(lo - r.offset)..<Int(hi - r.offset), with: data)
                            continue
                        }
                    }
                    s!.regions[i].verifiable = false
                }
            case .writeZeroes, .discard:
                for i in s!.regions.indices {
                    let r = (offset: s!.regions[i].offset, end: s!.regions[i].end)
                    let lo = max(r.offset, offset), hi = min(r.end, offset + length)
                    guard lo < hi else { continue }
                    s!.regions[i].bytes.replaceSubrange(Int(lo - r.offset)..<Int(hi - r.offset),
                                                       with: repeatElement(0, count: Int(hi - lo)))
                }
                if let statSize { s!.size = statSize }
            case .allocate:
                if let statSize { s!.size = statSize }
            case .truncate:
                s!.size = offset
                for i in s!.regions.indices where s!.regions[i].end > offset {
                    let keep = offset > s!.regions[i].offset ? Int(offset - s!.regions[i].offset) : 0
                    s!.regions[i].bytes.removeSubrange(keep...)
                }
            default:
                return
            }
        }
    }

    /// What differs between the expectation and the file, or nil.
    func differences(reader: FileReader) -> [String]? {
        guard let w = state.withLock({ $0 }), w.pid == getpid() else { return nil }
        var found: [String] = []
        let size = reader.size
        if size != w.size {
            found.append("its size is \(size) bytes, the writes blkfault saw leave it at \(w.size)")
        }
        for r in w.regions where r.verifiable && !r.bytes.isEmpty {
            guard let now = reader.read(offset: r.offset, count: r.bytes.count) else { continue }
            if !Self.same(now, r.bytes) {
                let at = zip(now, r.bytes).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(now.count, r.bytes.count)
                found.append("its \(r.name) (at 0x\(String(r.offset, radix: 16))) differs from what blkfault saw written, "
                    + "first at byte 0x\(String(r.offset + UInt64(at), radix: 16))")
            }
        }
        return found.isEmpty ? nil : found
    }

    /// `a == b` by memcmp: Array's `==` compares byte by byte (~14 instructions each; a
    /// header and L1 table compared at attach and at exit, ~0.1 M in a matched process).
    private static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }
}

/// Runs at exit (shim/core.c registers it at the first attach), guard held.
@_cdecl("blkfault_engine_exit")
public func blkfaultEngineExit() {
    let list = images.withLock { $0 }
    reportSteadyStats(list)
    // One file followed under two names (hard links) has two expectations, each missing
    // the other's writes: neither can be checked.
    // (known, device, inode) triples: not `[[UInt64]?]`, whose Optional metadata the
    // runtime would instantiate here (~28 K instructions; issue 7, s8-7a).
    var files: [UInt64] = []
    files.reserveCapacity(3 * list.count)
    for image in list {
        var (known, device, inode): (UInt64, UInt64, UInt64) = (0, 0, 0)
        image.witness.state.withLock { if let s = $0 { (known, device, inode) = (1, s.device, s.inode) } }
        files.append(known)
        files.append(device)
        files.append(inode)
    }
    func sameFile(_ a: Int, _ b: Int) -> Bool { files[3 * a + 1] == files[3 * b + 1] && files[3 * a + 2] == files[3 * b + 2] }
    for (i, image) in list.enumerated() {
        if files[3 * i] == 1, list.indices.filter({ files[3 * $0] == 1 && sameFile($0, i) }).count > 1 { continue }
        var found = image.witness.pending.withLock { $0 }
        found += image.witness.differences(reader: image.reader) ?? []
        guard !found.isEmpty, !image.witness.reported.exchange(true, ordering: .relaxed) else { continue }
        let what = found.joined(separator: "; ")
        writeAll(2, "blkfault: I/O bypassed blkfault on \(image.path): \(what) (it reached the file some way blkfault "
            + "does not see, or another process changed it; rules did not apply to that I/O)\n")
        if image.traceFD >= 0 {
            writeAll(image.traceFD, "{\"pid\":\(getpid()),\"image\":" + TraceLine.quote(image.path)
                + ",\"exit_check\":" + TraceLine.quote(what)
                + ",\"note\":\"I/O bypassed blkfault: the image changed in ways blkfault did not see\"}\n")
        }
    }
}
