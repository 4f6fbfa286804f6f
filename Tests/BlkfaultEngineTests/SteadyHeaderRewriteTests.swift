import Testing
import BlkfaultEngine

/// `previousWasHeaderRewrite` (a whole-cluster header write, qcow2_update_header) decides
/// what the next refcount block read (qcow2_downgrade's lookups, AmendDowngradeTests) and
/// the next flush (the close's, after amend or rebase -u) raise. The general path clears
/// it at any other request; a guest data request on the steady path (the classifier's
/// `steadyEvents`, or skipped by the preload's pre-filter as `steadyKinds` allows) must
/// leave the classifier as the general path leaves it.
@Suite struct SteadyHeaderRewriteTests {
    enum Path: CaseIterable { case general, steady, preFilter }

    /// 128 data clusters (1 KiB clusters at 69632, their L2 slice cached), the header
    /// rewritten whole, a guest data read of `read`, then `next`'s step.
    static func run(_ path: Path, read: (UInt64, UInt64), rules: String = "",
                    next: (inout Replay) -> Step) throws -> (read: [BlkdebugEvent]?, next: Step) {
        var r = try Replay(freshQcow2(), rules: rules)
        r.engine.usesSteadyPath = path != .general
        r.allocateDataClusters(128, readsRefblock: false)
        r.write(0, r.file.read(offset: 0, count: 1024)!)
        var readEvents: [BlkdebugEvent]?
        if path == .preFilter, SteadyPathTests.skips(r.engine, .read, read.0, read.1) {
            readEvents = nil  // never reaches the engine
        } else {
            readEvents = r.read(read.0, read.1).events
        }
        return (readEvents, next(&r))
    }

    static let reads: [(UInt64, UInt64)] = [(69632 + 4096, 1024), (69632, 4096), (69632 + 130048, 1024)]

    @Test(arguments: reads)
    func theFlushAfterASteadyReadIsTheGeneralPaths(read: (UInt64, UInt64)) throws {
        let general = try Self.run(.general, read: read) { $0.flush() }
        #expect(general.read == [.readAio])
        for path in [Path.steady, .preFilter] {
            let other = try Self.run(path, read: read) { $0.flush() }
            #expect(other.read == nil || other.read == [.readAio])
            #expect(other.next.events == general.next.events, "\(path)")
            #expect(other.next.stateAfter == general.next.stateAfter, "\(path)")
        }
    }

    /// A refcount block read after the data read is an allocation's free-space search
    /// (cluster_alloc), as on the general path, not qcow2_downgrade's lookup.
    @Test(arguments: reads)
    func theRefcountReadAfterASteadyReadIsTheGeneralPaths(read: (UInt64, UInt64)) throws {
        let general = try Self.run(.general, read: read) { $0.read(2048, 1024) }
        #expect(general.next.events == [.clusterAlloc])
        for path in [Path.steady, .preFilter] {
            let other = try Self.run(path, read: read) { $0.read(2048, 1024) }
            #expect(other.next.events == general.next.events, "\(path)")
        }
    }

    /// The pre-filter would skip such a read were it not for the header rewrite: the
    /// comparison above exercises the skip, not a path that is closed anyway.
    @Test func theReadIsSteadyWithoutTheHeaderRewrite() throws {
        var r = try Replay(freshQcow2())
        r.allocateDataClusters(128, readsRefblock: false)
        r.read(69632 + 4096, 1024)
        #expect(SteadyPathTests.skips(r.engine, .read, 69632 + 4096, 1024))
        r.write(0, r.file.read(offset: 0, count: 1024)!)
        #expect(!SteadyPathTests.skips(r.engine, .read, 69632 + 4096, 1024))
    }
}
