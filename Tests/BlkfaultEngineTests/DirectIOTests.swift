import Testing
import BlkfaultEngine

/// qemu-io -t none (O_DIRECT): file-posix pads qcow2's unaligned writes to the file's
/// request alignment with a read-modify-write, below blkdebug (QEMU 7.2, parity workload
/// dnone). 1 KiB clusters: refcount table @1024, its first entry set.
@Suite struct DirectIOTests {
    @Test func aPaddedRefcountTableEntryWriteIsAHookup() throws {
        var r = try Replay(freshQcow2())
        r.open()
        var sector = r.file.read(offset: 1024, count: 512)!
        #expect(r.read(1024, 512).events == [])  // the padding's read
        sector.replaceSubrange(8..<16, with: be64(535552))  // entry 1: a new refblock
        #expect(r.write(1024, sector).events.contains(.refblockAllocHookup))
    }

    @Test func aPaddedWriteThatChangesNoEntryIsNot() throws {
        var r = try Replay(freshQcow2())
        r.open()
        let sector = r.file.read(offset: 1024, count: 512)!
        #expect(!r.write(1024, sector).events.contains(.refblockAllocHookup))
    }
}

/// file-posix's alignment probe (AlignmentProbe.swift): at the open of an O_DIRECT fd it
/// reads offset 0 itself, below blkdebug, before qcow2 reads the header. A `none` rule
/// with once=on fails the header read, as blkdebug does (parity: none on dnone; failing
/// the probe's first read instead made QEMU take alignment 1 and the open succeed).
extension DirectIOTests {
    static let noneOnce = "[inject-error]\nevent = \"none\"\nerrno = \"5\"\nonce = \"on\"\n"

    /// ext4 (measured, qemu-io -t none): step 1 ends at 512, step 2 at the second try.
    static let ext4Probe: [(UInt64, Bool)] = [(1, false), (512, true), (4096, false), (4096, true)]

    /// One read of offset 0 as the preload drives it; `ok` false is the kernel's EINVAL.
    func probe(_ r: inout Replay, _ length: UInt64, ok: Bool) -> Step {
        let op = Operation(.read, offset: 0, length: length)
        let step = r.engine.before(op, file: r.file)
        if step.decision == .perform { _ = r.engine.after(op, succeeded: ok, file: r.file) }
        return step
    }

    func directOpen(_ rules: String = noneOnce) throws -> Replay {
        var r = try Replay(freshQcow2(), rules: rules)
        r.engine.noteOpen(writable: true, direct: true)
        return r
    }

    @Test func theProbesReadsAreNoRequests() throws {
        var r = try directOpen()
        #expect(r.engine.before(Operation(.stat), file: r.file).events == [])  // raw_open's fstat
        for (length, ok) in Self.ext4Probe {
            let step = probe(&r, length, ok: ok)
            #expect(step.events == [] && step.decision == .perform)
        }
        let header = r.read(0, 512)
        #expect(header.events == [.none] && header.decision == .fail(errno: 5))
    }

    @Test func theQuietPathPassesThemAndWantsTheirOutcome() throws {
        var r = try directOpen()
        for (length, ok) in Self.ext4Probe {
            let op = Operation(.read, offset: 0, length: length)
            let d = r.engine.decide(op, file: r.file)
            #expect(d.decision == .perform && d.needsAfter)
            _ = r.engine.after(op, succeeded: ok, file: r.file)
        }
        #expect(r.engine.decide(Operation(.read, offset: 0, length: 512), file: r.file).decision == .fail(errno: 5))
    }

    /// A 4 KiB-sector block device tells the request size: step 2 only, and the header
    /// read has its shape.
    @Test func aDeviceThatTellsTheSizeProbesOnlyTheBuffer() throws {
        var r = try directOpen()
        for ok in [false, false, false, false, true] { #expect(probe(&r, 4096, ok: ok).events == []) }
        #expect(r.read(0, 4096).decision == .fail(errno: 5))
    }

    /// NFS takes any alignment: no probe, the first read is the header's.
    @Test func withoutAProbeTheFirstReadIsTheHeaders() throws {
        var r = try directOpen()
        #expect(r.read(0, 104).events == [.none])
        // The probe is over: a later read of 1 byte at 0 is a request.
        #expect(r.read(0, 1).events == [])
        var plain = try Replay(freshQcow2(), rules: Self.noneOnce)
        #expect(plain.read(0, 1).decision == .fail(errno: 5))  // not O_DIRECT: no probe
    }
}
