import Testing
import BlkfaultEngine

/// Reading the L1 table again (qemu-img check does) skips the entries that change
/// nothing; the mapping from each L2 table to its L1 index stays what rewriting every
/// entry gave, also for a corrupt table whose entries share an L2 table.
@Suite struct L1RereadTests {
    @Test func sharedTableKeepsItsIndexAcrossRereads() throws {
        let cluster: UInt64 = 1024, copied: UInt64 = 1 << 63
        var file = freshQcow2()
        let l1 = 3 * cluster, table = 100 * cluster, other = 101 * cluster
        for (index, target) in [(0, table), (5, table), (6, other)] {
            file.bytes.replaceSubrange(Int(l1) + index * 8..<Int(l1) + index * 8 + 8, with: be64(copied | target))
        }
        file.write(offset: other, data: [UInt8](repeating: 0, count: Int(cluster)))
        var shadow = try ShadowImage(reading: file)
        let whole = file.read(offset: l1, count: Int(shadow.header.l1Size) * 8)!
        // At open the last entry naming a table owns it; a reread changes nothing.
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 5))
        shadow.learn(offset: l1, data: whole, file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 5))
        #expect(shadow.region(at: other) == .l2Table(tableOffset: other, l1Index: 6))
        // Entry 5 cleared: the table has no owner until a reread of entry 0, unchanged,
        // gives it one again.
        shadow.learn(offset: l1 + 40, data: [UInt8](repeating: 0, count: 8), file: file)
        #expect(shadow.region(at: table) == .unreferenced)
        shadow.learn(offset: l1, data: Array(whole[0..<8]), file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 0))
        #expect(shadow.l2Tables.count == 2)
        // Entry 6 rewritten to name the table too: it takes the table over; a reread of
        // entry 0, unchanged but no longer the owner, takes it back.
        shadow.learn(offset: l1 + 48, data: be64(copied | table), file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 6))
        #expect(shadow.region(at: other) == .unreferenced)
        shadow.learn(offset: l1, data: Array(whole[0..<8]), file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 0))
        // Entry 6 reread with what it holds now (it named the table last, but lost it).
        shadow.learn(offset: l1 + 48, data: be64(copied | table), file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 6))
        // The whole table reread as at open: entry 5 (cleared) stays clear; 6 owns the table.
        var now = whole
        now.replaceSubrange(40..<48, with: [UInt8](repeating: 0, count: 8))
        now.replaceSubrange(48..<56, with: be64(copied | table))
        shadow.learn(offset: l1, data: now, file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 6))
        shadow.learn(offset: l1, data: now, file: file)
        #expect(shadow.region(at: table) == .l2Table(tableOffset: table, l1Index: 6))
        #expect(shadow.l2Tables == [table: 6])
    }
}
