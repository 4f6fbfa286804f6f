import Testing
@testable import BlkfaultEngine

// Inputs the libFuzzer fuzzers (scripts/fuzz) found to crash the engine, reduced to
// what matters. Each crashed before its fix.

@Suite struct FuzzRegressionTests {
    /// A header whose L1 table offset lies near 2^64 with l1_size 0 loads fine (nothing to
    /// read); a later header write that moves the L1 table released the old one with
    /// `offset + bytes + cluster - 1`, which overflowed (found by the shadow-model fuzzer
    /// after 6 M executions).
    @Test func movingAnL1TableFromNear2To64() throws {
        var image = freshQcow2()
        image.write(offset: 36, data: [0, 0, 0, 0] + be64(0xffff_ffff_ffff_fe00))
        var r = try Replay(image)
        #expect(r.engine.shadow != nil)
        // QEMU-style L1 growth: the 12 bytes at offset 36 (l1_size, l1_table_offset).
        _ = r.write(36, [0, 0, 0, 1] + be64(3 << 10))
        // And the same for the refcount table fields (offset 48: offset and clusters).
        _ = r.write(48, be64(0xffff_ffff_ffff_fc00) + [0, 0, 0, 0])
        _ = r.write(48, be64(1 << 10) + [0, 0, 0, 1])
    }

    /// After a header write points the L1 table past the end of the file, the table
    /// cannot be reloaded; classifying the next I/O must not overflow on the new offset.
    @Test func regionAfterAnUnloadableL1Move() throws {
        var r = try Replay(freshQcow2())
        _ = r.write(36, [0, 0, 0, 1] + be64(0xffff_ffff_ffff_fe00))
        _ = r.read(0xffff_ffff_ffff_ff00, 8)
        _ = r.write(5 << 10, [UInt8](repeating: 1, count: 1024))
    }
}
