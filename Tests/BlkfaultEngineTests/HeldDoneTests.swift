import Testing
import BlkfaultEngine

/// Two data tasks of one vmstate write (l2updb: `write -b 0 128k` after `write -b 0 512`,
/// 64512 bytes @4096 and 66560 @166912), replayed in the order the preload can see them:
/// the first task's pwrite finishes before the second's starts. Real blkdebug checks both
/// tasks before the first's `pwritev_done` (Tests/parity/tools/blkdebug_events.py), so a
/// once=on rule on it fails the refcount write-back after them, not the second task.
@Suite struct HeldDoneTests {
    let rule = "[inject-error]\nevent = \"pwritev_done\"\nerrno = \"5\"\nonce = \"on\"\n"

    /// 1 KiB clusters; L2 table @68608 (its first 3 entries at 69632...), refcounts to 70.
    func image() throws -> Replay {
        let l2 = l2Slice(size: 1024, host: 69632, count: 3, cluster: 1024)
        let setup = try CompressionAndShrinkTests().imageWithL2(l2, refcounted: Array(67...70))
        return try Replay(setup.file, rules: rule)
    }

    /// Opened, its L2 table and refcount block read.
    func opened() throws -> Replay {
        var r = try image()
        r.open()
        r.read(68608, 1024)
        r.read(2048, 1024)
        return r
    }

    @Test func theSecondTaskOfARequestIsCheckedBeforeTheFirstsCompletion() throws {
        var r = try opened()
        // Two guest data writes, back to back, each finished before the next starts.
        #expect(r.write(72704, [UInt8](repeating: 1, count: 3072)).decision == .perform)
        #expect(r.write(76800, [UInt8](repeating: 2, count: 3072)).decision == .perform)
        // The refcount write-back after them: the held pwritev_done fires the rule first.
        #expect(r.write(2048, r.refblock(2048, settingClusters: Array(71...76))).decision == .fail(errno: 5))
    }

    /// A metadata request between two data writes: the first's pwritev_done is raised
    /// before it, as blkdebug does once the request's coroutine yielded.
    @Test func anyOtherRequestReleasesIt() throws {
        var r = try opened()
        #expect(r.write(72704, [UInt8](repeating: 1, count: 3072)).decision == .perform)
        #expect(r.flush().decision == .fail(errno: 5))
    }
}
