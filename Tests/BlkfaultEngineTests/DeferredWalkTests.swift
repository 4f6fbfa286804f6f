import Testing
import BlkfaultEngine

/// A read-only metadata walk (qemu-img check without -r) defers learning its L2 tables.
/// Each scenario runs the same operations through a classifier that defers and one that
/// learns every table at once: every operation's events, and what the shadow model
/// knows in the end, must be the same.
@Suite struct DeferredWalkTests {
    static let cluster: UInt64 = 1024, copied: UInt64 = 1 << 63

    /// L1 entry 0 -> table A (cluster 100): a run of ten clusters from 200, then free
    /// entries (an allocated-then-free boundary). L1 entry 1 -> table B (cluster 101):
    /// clusters 300..303, and a compressed cluster at host cluster 350.
    static func image() -> MemoryImage {
        var file = freshQcow2()
        let l1 = Int(3 * cluster)
        file.bytes.replaceSubrange(l1..<l1 + 16, with: be64(copied | 100 * cluster) + be64(copied | 101 * cluster))
        var a = [UInt8](repeating: 0, count: Int(cluster)), b = a
        for i in 0..<10 { a.replaceSubrange(i * 8..<i * 8 + 8, with: be64(copied | UInt64(200 + i) * cluster)) }
        for i in 0..<4 { b.replaceSubrange(i * 8..<i * 8 + 8, with: be64(copied | UInt64(300 + i) * cluster)) }
        b.replaceSubrange(40..<48, with: be64(1 << 62 | 350 * cluster))  // compressed, one sector
        file.write(offset: 100 * cluster, data: a)
        file.write(offset: 101 * cluster, data: b)
        file.write(offset: 360 * cluster, data: [UInt8](repeating: 0, count: Int(cluster)))
        return file
    }

    enum Step { case read(UInt64, UInt64), write(UInt64, UInt64), becomeWritable }

    /// Events of every step, and the classifier at the end.
    static func run(_ steps: [Step], deferring: Bool) throws -> ([[BlkdebugEvent]], Qcow2Classifier) {
        var file = image()
        var c = Qcow2Classifier(shadow: try ShadowImage(reading: file))
        c.defersWalkLearning = deferring
        var log: [[BlkdebugEvent]] = []
        for step in steps {
            switch step {
            case .becomeWritable:
                c.writable = true
            case .read(let offset, let length):
                let data = file.read(offset: offset, count: Int(length)) ?? []
                let before = c.eventsBefore(Operation(.read, offset: offset, length: length), file: file)
                log.append(before + c.eventsAfter(Operation(.read, offset: offset, data: data), performed: true, succeeded: true, file: file))
            case .write(let offset, let length):
                let op = Operation(.write, offset: offset, data: [UInt8](repeating: 0xa5, count: Int(length)))
                let before = c.eventsBefore(op, file: file)
                file.write(offset: offset, data: [UInt8](repeating: 0xa5, count: Int(length)))
                log.append(before + c.eventsAfter(op, performed: true, succeeded: true, file: file))
            }
        }
        return (log, c)
    }

    /// qemu-img check's reads: header, L1, refcount table, L1 again (the walk), then each
    /// table, a refblock read after the last one (a free-space check's cache miss).
    static let walk: [Step] = {
        let c = cluster
        return [.read(0, 112), .read(3 * c, 8192 * 8), .read(c, c), .read(3 * c, 8192 * 8),
                .read(100 * c, c), .read(2 * c, c), .read(101 * c, c), .read(100 * c, c), .read(2 * c, c)]
    }()

    /// The same events; `learnt`: the last step needed the tables, so the shadow models agree.
    static func same(_ steps: [Step], learnt: Bool = true) throws {
        let (deferred, d) = try run(steps, deferring: true)
        let (atOnce, a) = try run(steps, deferring: false)
        #expect(deferred == atOnce)
        for k in UInt64(0)..<400 where learnt {
            #expect(d.shadow.region(at: k * cluster) == a.shadow.region(at: k * cluster), "cluster \(k)")
            #expect(d.shadow.holdsCompressedData(k * cluster) == a.shadow.holdsCompressedData(k * cluster), "cluster \(k)")
        }
    }

    @Test func aDataReadAfterTheWalk() throws {
        try Self.same(Self.walk + [.read(205 * Self.cluster, 512), .read(302 * Self.cluster, Self.cluster)])
        let (events, _) = try Self.run(Self.walk + [.read(205 * Self.cluster, 512)], deferring: true)
        #expect(events.last == [.readAio])
    }

    @Test func aCompressedReadAfterTheWalk() throws {
        try Self.same(Self.walk + [.read(350 * Self.cluster, 512)])
        let (events, _) = try Self.run(Self.walk + [.read(350 * Self.cluster, 512)], deferring: true)
        #expect(events.last == [.readCompressed])
    }

    /// Table A, read last, ends an allocated run and a refblock read followed it: once the
    /// image becomes writable, an allocation in a free cluster extends that run (no
    /// cluster_alloc) in both.
    @Test func becomingWritableAfterTheWalk() throws {
        let c = Self.cluster
        try Self.same(Self.walk + [.becomeWritable, .write(400 * c, c), .write(205 * c, 512), .read(2 * c, c)])
        try Self.same(Self.walk + [.becomeWritable, .read(2 * c, c), .write(401 * c, c)])
        // The refblock read comes after the switch, right after table A's deferred read
        // (and no refblock read followed a table before). (Once writable after a walk,
        // qemu-img check -r's repair model takes refblock reads first: the last table's
        // boundary, settled too, decides nothing there.)
        let walkNoRefblock: [Step] = [.read(0, 112), .read(3 * c, 8192 * 8), .read(c, c), .read(3 * c, 8192 * 8),
                                      .read(101 * c, c), .read(100 * c, c)]
        try Self.same(walkNoRefblock + [.becomeWritable, .read(2 * c, c), .write(205 * c, 512)])
    }

    @Test func onlyMetadataAfterTheWalkLearnsNothing() throws {
        let (_, d) = try Self.run(Self.walk, deferring: true)
        let (_, a) = try Self.run(Self.walk, deferring: false)
        // Deferred: nothing learnt, and nothing asked for it.
        #expect(d.shadow.dataClusters.count == 0)
        #expect(a.shadow.dataClusters.count == 14)
        try Self.same(Self.walk + Self.walk.suffix(5), learnt: false)
    }

    /// A writable image, or the first read of L1 (no walk): nothing is deferred.
    @Test func nothingDeferredOutsideAReadOnlyWalk() throws {
        let c = Self.cluster
        let (_, openOnly) = try Self.run([.read(0, 112), .read(3 * c, 8192 * 8), .read(100 * c, c)], deferring: true)
        #expect(openOnly.shadow.dataClusters.count == 10)
        let (_, writable) = try Self.run([.becomeWritable] + Self.walk, deferring: true)
        #expect(writable.shadow.dataClusters.count == 14)
    }
}
