import Foundation
import Testing

/// An image file with holes inside its data clusters (copied by `cp --sparse=always`):
/// over file-posix qcow2's metadata-preallocation check compares the allocated size
/// (fstat's st_blocks) with the clusters in use and takes such a file for a
/// metadata-preallocated image, so block status then reports the holes as zeros; over
/// blkdebug QEMU cannot learn the allocated size and never does. With
/// BLKFAULT_ALLOCATED_SIZE=length the preload reports a target's st_blocks as at least its
/// length (shim/allocation.c), so `qemu-img map` (and commit's copy, which follows block
/// status) match blkdebug's; without it the program sees the holes as it does without
/// blkfault. Fails without the switch: the map then has an extra
/// `"zero": true, "data": true` extent.
@Suite(.serialized) struct AllocatedSizeTests {
    /// An image whose second cluster holds 4 KiB of data and a hole after it, copied with
    /// holes into `dir/t.qcow2` (64 KiB clusters). A backing file `base.qcow2` too if asked.
    func holeyImage(in s: Scratch, backing: Bool = false) throws -> String {
        let made = s.path("made.qcow2")
        var args = ["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536"]
        if backing {
            let base = s.path("made-base.qcow2")
            var r = try run(qemuImg, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", base, "64M"])
            try #require(r.status == 0, "\(r)")
            r = try run(qemuIO, ["-f", "qcow2", "-c", "write -P 1 0 68k", base])
            try #require(r.status == 0, "\(r)")
            r = try run("/bin/cp", ["--sparse=always", base, s.path("base.qcow2")])
            try #require(r.status == 0, "\(r)")
            args += ["-b", "base.qcow2", "-F", "qcow2"]
        }
        var r = try run(qemuImg, args + [made, "64M"])
        try #require(r.status == 0, "\(r)")
        r = try run(qemuIO, ["-f", "qcow2", "-c", "write -P 2 1M 68k", made])
        try #require(r.status == 0, "\(r)")
        let img = s.path("t.qcow2")
        r = try run("/bin/cp", ["--sparse=always", made, img])
        try #require(r.status == 0, "\(r)")
        return img
    }

    func mapUnderBlkfault(_ img: String, allocatedSize: String? = "length") throws -> Outcome {
        var env = ["LD_PRELOAD": Built.library, "BLKFAULT_IMAGE": img, "BLKFAULT_TRACE": "/dev/null"]
        env["BLKFAULT_ALLOCATED_SIZE"] = allocatedSize
        return try run(qemuImg, ["map", "-f", "qcow2", "--output=json", img], env: env)
    }

    func mapUnderBlkdebug(_ img: String, rules: String) throws -> Outcome {
        try run(qemuImg, ["map", "-f", "qcow2", "--output=json", "blkdebug:\(rules):\(img)"])
    }

    @Test func mapOfAnImageWithHolesIsBlkdebugs() throws {
        try requireTools()
        let s = try Scratch()
        let img = try holeyImage(in: s)
        let rules = try s.write("rules.cfg", "")
        let subject = try mapUnderBlkfault(img)
        let reference = try mapUnderBlkdebug(img, rules: rules)
        #expect(subject.status == 0 && reference.status == 0, "\(subject)\n\(reference)")
        #expect(subject == reference)
        // The check itself: over file-posix alone QEMU does see the holes.
        let plain = try run(qemuImg, ["map", "-f", "qcow2", "--output=json", img])
        #expect(plain.stdout.contains("\"zero\": true, \"data\": true"), "the copy has no holes QEMU sees: \(plain)")
    }

    /// Without the switch (and with any other value) the program sees the file as it is:
    /// where no rule fires, what it prints is what it prints without blkfault.
    @Test func byDefaultTheAllocatedSizeIsTheFiles() throws {
        try requireTools()
        let s = try Scratch()
        let img = try holeyImage(in: s)
        let plain = try run(qemuImg, ["map", "-f", "qcow2", "--output=json", img])
        for value in [nil, "real"] {
            let subject = try mapUnderBlkfault(img, allocatedSize: value)
            #expect(subject == plain, "BLKFAULT_ALLOCATED_SIZE=\(value ?? "unset")")
        }
    }

    /// `blkfault run --allocated-size-as-length` sets the switch; without the flag the
    /// run sees the holes.
    @Test func blkfaultRunFlagSetsTheSwitch() throws {
        try requireTools()
        let s = try Scratch()
        let img = try holeyImage(in: s)
        let rules = try s.write("rules.cfg", "")
        let map = ["qemu-img", "map", "-f", "qcow2", "--output=json", img]
        let flagged = try run(Built.cli, ["run", "-c", rules, "-i", img, "--allocated-size-as-length", "--"] + map)
        let plainRun = try run(Built.cli, ["run", "-c", rules, "-i", img, "--"] + map)
        let reference = try mapUnderBlkdebug(img, rules: rules)
        let plain = try run(qemuImg, Array(map.dropFirst()))
        #expect(flagged.status == 0 && flagged.stdout == reference.stdout, "\(flagged)\n\(reference)")
        #expect(plainRun.status == 0 && plainRun.stdout == plain.stdout, "\(plainRun)\n\(plain)")
        #expect(reference.stdout != plain.stdout, "the copy has no holes QEMU sees")
    }

    /// Only a target's size is raised: a followed backing file has no blkdebug node over
    /// it in the reference (`blkdebug:RULES:OVERLAY`), so QEMU sees its holes there too.
    @Test func aFollowedBackingFileKeepsItsAllocatedSize() throws {
        try requireTools()
        let s = try Scratch()
        let img = try holeyImage(in: s, backing: true)
        let rules = try s.write("rules.cfg", "")
        let subject = try mapUnderBlkfault(img)
        let reference = try mapUnderBlkdebug(img, rules: rules)
        #expect(subject == reference)
        #expect(reference.stdout.contains("\"depth\": 1, \"present\": true, \"zero\": true, \"data\": true"),
                "the base's holes are not seen: \(reference)")
    }
}
