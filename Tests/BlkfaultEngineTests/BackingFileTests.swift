import Testing
import BlkfaultEngine

/// An overlay's backing file (ImageEngine+Backing.swift): the backing file's reads, as
/// QEMU 7.2's qemu-io did them (strace), decide the events of the overlay's next request.
/// Overlay: 1 GiB, 1 KiB clusters, L2 table @68608 for L1 entry 0, no data clusters.
@Suite struct BackingFileTests {
    let cluster: UInt64 = 1024
    /// A raw backing file of 1 MiB of 0x01.
    let rawBase = MemoryImage([UInt8](repeating: 1, count: 1 << 20))

    /// QEMU's order: the overlay's open reads, the backing file's open, then (`l2Load`)
    /// the L2 load of the first guest access.
    func overlay(rules: String, backing: MemoryImage? = nil, format: String? = "raw", l2Load: Bool = true) throws -> Replay {
        var setup = try Replay(freshQcow2())
        setup.file.write(offset: 2048, data: setup.refblock(2048, settingClusters: [67]))
        setup.file.write(offset: 3072, data: be64((1 << 63) | 68608))
        setup.file.write(offset: 68608, data: [UInt8](repeating: 0, count: 1024))
        var r = try Replay(setup.file, rules: rules)
        r.open()
        r.engine.followBacking(format: format, file: backing ?? rawBase)
        if l2Load { r.read(68608, 1024) }
        return r
    }

    /// A qcow2 file whose L1 entry 0 points to an empty L2 table @68608, as in the overlay.
    func qcow2WithOneL2Table() -> MemoryImage {
        var file = freshQcow2()
        file.write(offset: 3072, data: be64((1 << 63) | 68608))
        file.write(offset: 68608, data: [UInt8](repeating: 0, count: 1024))
        return file
    }

    /// read_backing_aio moves state 1 -> 2 -> 3: the state after says how often it was raised.
    let countsTwoRaises = "[set-state]\nevent = \"read_backing_aio\"\nstate = \"1\"\nnew_state = \"2\"\n"
        + "[set-state]\nevent = \"read_backing_aio\"\nstate = \"2\"\nnew_state = \"3\"\n"

    func rule(_ event: String, once: String = "on") -> String {
        "[inject-error]\nevent = \"\(event)\"\nerrno = \"5\"\nonce = \"\(once)\"\n"
    }

    /// A write as file-posix does it with `segments` buffers (pwritev).
    func write(_ r: inout Replay, _ offset: UInt64, _ length: Int, segments: Int) -> Step {
        var op = Operation(.write, offset: offset, data: [UInt8](repeating: 2, count: length))
        op.segments = segments
        let step = r.engine.before(op, file: r.file)
        if step.decision == .perform {
            r.file.write(offset: offset, data: [UInt8](repeating: 2, count: length))
            _ = r.engine.after(op, succeeded: true, file: r.file)
        }
        return step
    }

    @Test func aGuestReadOfBackingDataFailsTheOverlaysNextRequest() throws {
        var r = try overlay(rules: rule("read_backing_aio"))
        // `read 0 4k`: the overlay has no data there; QEMU reads the backing file.
        let held = r.engine.backingOperation(Operation(.read, offset: 0, length: 4096))
        #expect(held.held == [.readBackingAio] && held.decision == .perform)
        // The overlay's next request (here the refblock read of `write 1M 4k`) fails.
        let next = r.read(2048, 1024)
        #expect(next.events.first == .readBackingAio)
        #expect(next.decision == .fail(errno: 5))
        // once: the request after it passes, and nothing is held any more.
        #expect(r.read(2048, 1024).decision == .perform)
    }

    @Test func withoutABackingReadTheRuleNeverFires() throws {
        var r = try overlay(rules: rule("read_backing_aio", once: "off"))
        #expect(r.read(2048, 1024).decision == .perform)
        #expect(r.write(69632, [UInt8](repeating: 2, count: 1024)).decision == .perform)
        #expect(!r.read(69632, 1024).events.contains(.readBackingAio))
    }

    @Test func aMergedCopyOnWriteRaisesCowReadAndCowWriteBeforeItsWrite() throws {
        for event in ["cow_read", "cow_write", "read_backing_aio", "write_aio"] {
            var r = try overlay(rules: rule(event))
            // `write 512 512`: head 0..512 and tail 1024..1024 of the cluster read from
            // the backing file in one read, then head + data + tail in one pwritev.
            _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 1024))
            let w = write(&r, 69632, 1024, segments: 3)
            let events = w.events.filter { [.cowRead, .readBackingAio, .writeAio, .cowWrite].contains($0) }
            #expect(events == [.cowRead, .readBackingAio, .writeAio, .cowWrite], "\(event)")
            #expect(w.decision == .fail(errno: 5), "\(event)")
        }
    }

    @Test func aGuestWriteAfterABackingReadIsNoCopyOnWrite() throws {
        // A read of backing data, then a one-buffer write of a whole new cluster (a guest
        // write, or copy-on-read's write-back): read_backing_aio only, no cow_* events.
        var r = try overlay(rules: rule("cow_read") + rule("cow_write"))
        _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 1024))
        let w = write(&r, 69632, 1024, segments: 1)
        #expect(w.events.first == .readBackingAio)
        #expect(!w.events.contains(.cowRead) && !w.events.contains(.cowWrite))
        #expect(w.decision == .perform)
    }

    @Test func copyOnWriteWithoutMergedDataWritesTheRegionWithCowWriteOnly() throws {
        // perform_cow when the guest data cannot go with the COW regions (QEMU 7.2: an
        // encrypted image): the data first (write_aio), then the region's read and write.
        var r = try overlay(rules: rule("cow_write", once: "off"))
        let data = write(&r, 69632 + 512, 512, segments: 1)
        #expect(data.events.contains(.writeAio) && data.decision == .perform)
        _ = r.engine.backingOperation(Operation(.read, offset: 0, length: 512))
        let head = write(&r, 69632, 512, segments: 1)
        #expect(head.events == [.cowRead, .readBackingAio, .cowWrite, .pwritev])
        #expect(head.decision == .fail(errno: 5))
    }

    @Test func aQcow2BackingFilesMetadataReadsAreNotDataReads() throws {
        let base = freshQcow2()
        var r = try overlay(rules: rule("read_backing_aio"), backing: base, format: "qcow2")
        // Its header and refcount table at open: no backing data read.
        #expect(r.engine.backingOperation(Operation(.read, offset: 0, length: 112)).held.isEmpty)
        #expect(r.engine.backingOperation(Operation(.read, offset: 1024, length: 1024)).held.isEmpty)
        #expect(r.read(2048, 1024).decision == .perform)
        // A data read of it (a cluster nothing of its metadata covers) is one.
        #expect(r.engine.backingOperation(Operation(.read, offset: 200 * 1024, length: 1024)).held == [.readBackingAio])
        #expect(r.read(2048, 1024).decision == .fail(errno: 5))
    }

    @Test func aBackingL2LoadStartsTheReadAndItsDataReadIsNotCountedTwice() throws {
        var r = try overlay(rules: countsTwoRaises, backing: qcow2WithOneL2Table(), format: nil)
        #expect(r.engine.backingOperation(Operation(.read, offset: 68608, length: 1024)).held == [.readBackingAio])
        // A concurrent overlay read comes before the backing data read.
        #expect(r.read(2048, 1024).stateAfter == 2)
        #expect(r.engine.backingOperation(Operation(.read, offset: 200 * 1024, length: 1024)).held.isEmpty)
        #expect(r.read(2048, 1024).stateAfter == 2)
    }

    @Test func aReadThroughTheChainRaisesOnce() throws {
        // backing file (qcow2, depth 0) with an L2 table the read misses, its own
        // backing file (raw, depth 1) with the data: one backing read, one raise.
        var r = try overlay(rules: countsTwoRaises, backing: qcow2WithOneL2Table(), format: "qcow2")
        r.engine.followBacking(format: "raw", file: rawBase, depth: 1)
        #expect(r.engine.backingOperation(Operation(.read, offset: 68608, length: 1024), depth: 0).held == [.readBackingAio])
        #expect(r.engine.backingOperation(Operation(.read, offset: 0, length: 4096), depth: 1).held == [.readBackingAio])
        #expect(r.read(2048, 1024).stateAfter == 2)
        // A file of the chain the program writes (qemu-img commit) is no longer read through it.
        r.engine.followBacking(format: "raw", file: rawBase, writable: true, depth: 1)
        #expect(r.engine.backingOperation(Operation(.read, offset: 0, length: 4096), depth: 1).held.isEmpty)
    }

    @Test func theFormatProbeOfABackingFileWithoutFormatIsNoDataRead() throws {
        // No backing-format extension: QEMU reads 512 bytes at 0 to probe the format.
        var r = try overlay(rules: rule("read_backing_aio"), format: nil, l2Load: false)
        #expect(r.engine.backingOperation(Operation(.read, offset: 0, length: 512)).held.isEmpty)
        #expect(r.read(2048, 1024).decision == .perform)
        // After the overlay's next request the same read is a guest read of backing data.
        #expect(r.engine.backingOperation(Operation(.read, offset: 0, length: 512)).held == [.readBackingAio])
        #expect(r.read(2048, 1024).decision == .fail(errno: 5))
    }

    @Test func theBackingFileNameAndFormatComeFromTheOverlaysHeader() throws {
        var image = freshQcow2()
        // backing-format extension at 112 ("raw"), then the end; the name at 512.
        image.write(offset: 112, data: [0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3] + Array("raw".utf8) + [0, 0, 0, 0, 0])
        image.write(offset: 128, data: [UInt8](repeating: 0, count: 8))
        image.write(offset: 512, data: Array("base.raw".utf8))
        image.write(offset: 8, data: be64(512))
        image.write(offset: 16, data: [0, 0, 0, 8])
        let engine = ImageEngine(rules: RuleSet(), file: image)
        let name = try #require(engine.backingFileName(file: image))
        #expect(name == BackingFileName(name: "base.raw", format: "raw"))
        #expect(name.path(overlay: "/images/ov.qcow2") == "/images/base.raw")
        #expect(BackingFileName(name: "/abs/b.qcow2", format: nil).path(overlay: "/images/ov.qcow2") == "/abs/b.qcow2")
        // No backing file: nothing.
        #expect(ImageEngine(rules: RuleSet(), file: freshQcow2()).backingFileName(file: freshQcow2()) == nil)
    }
}
