// libFuzzer entry point: the qcow2 shadow model and classifier (ImageEngine) fed an
// image and then a sequence of operations, as a program would issue them.
//
// Input: the image, sparse (u32 LE file size, capped at 256 KiB; u8 chunk count; per chunk
// u32 LE offset, u16 LE length, the bytes; the rest of the file is zeros: real images are
// mostly zeros, and this keeps a 64 KiB-cluster image a few hundred bytes long), then
// operations of 8 bytes each:
//   kind (u8, mod 7), length code (u8), offset (u32 LE, scaled), pattern (u16 LE).
// Writes carry a repeated pattern, or for metadata-sized writes bytes taken from the
// input's image part so that realistic table entries appear. Operations the engine
// lets through are applied to the in-memory file, as the kernel would.

/// Fires on many events so the rule machine runs alongside the model; once=off so it
/// keeps firing. Parsed once.
let fuzzRules: RuleSet = {
    var text = ""
    for (i, e) in ["l1_update", "l2_load", "l2_alloc_write", "cluster_alloc", "refblock_alloc",
                   "flush_to_disk", "write_aio", "reftable_grow", "cluster_free"].enumerated() {
        text += "[set-state]\nevent = \"\(e)\"\nstate = \"\(i % 3 + 1)\"\nnew_state = \"\(i % 3 + 2)\"\n"
        text += "[inject-error]\nevent = \"\(e)\"\nstate = \"\(i % 4 + 1)\"\nerrno = \"\(i % 2 == 0 ? 5 : -5)\"\nonce = \"off\"\n"
    }
    return try! RuleFile.parse(Array(text.utf8), fileName: "fuzz-rules")
}()

/// The image file, changed in place (MemoryImage is a value: every write would copy it).
final class FuzzFile: ImageReader {
    var bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var size: UInt64 { UInt64(bytes.count) }
    func read(offset: UInt64, count: Int) -> [UInt8]? {
        guard offset <= size else { return nil }
        let start = Int(offset)
        return Array(bytes[start..<min(bytes.count, start + max(0, count))])
    }
    func write(offset: UInt64, data: [UInt8]) {
        let end = Int(offset) + data.count
        if end > bytes.count { bytes.append(contentsOf: repeatElement(0, count: end - bytes.count)) }
        bytes.replaceSubrange(Int(offset)..<end, with: data)
    }
}

@inline(__always) func le32(_ b: [UInt8], _ i: Int) -> UInt32 {
    UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
}

@_cdecl("LLVMFuzzerTestOneInput")
public func shadowModelFuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard size >= 4, let data else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let imageLength = Int(le32(input, 0) % (256 << 10))
    var imageBytes = [UInt8](repeating: 0, count: imageLength)
    var pos = 4
    if pos < input.count {
        let chunks = Int(input[pos]); pos += 1
        for _ in 0..<chunks where pos + 6 <= input.count {
            let at = Int(le32(input, pos)), count = Int(input[pos + 4]) | Int(input[pos + 5]) << 8
            pos += 6
            let take = min(count, input.count - pos)
            for k in 0..<take where at + k < imageLength { imageBytes[at + k] = input[pos + k] }
            pos += take
        }
    }
    let file = FuzzFile(imageBytes)
    // Alternate the two models and the rules on the input's length, so both paths run.
    let choice: ModelChoice = size % 5 == 0 ? .rawOnly : .qemu72
    var engine = ImageEngine(rules: size % 3 == 0 ? RuleSet() : fuzzRules, file: file, model: choice)
    engine.noteOpen(writable: size % 7 != 0)
    var ops = 0
    while pos + 8 <= input.count && ops < 48 {
        ops += 1
        let kind = OperationKind(rawValue: Int32(input[pos] % 7))!
        let lengthCode = input[pos + 1]
        let rawOffset = UInt64(le32(input, pos + 2))
        let pattern = UInt16(input[pos + 6]) | UInt16(input[pos + 7]) << 8
        pos += 8
        // Offsets: mostly inside or just past the file, sometimes anywhere (incl. near 2^64).
        let offset: UInt64
        switch lengthCode >> 6 {
        case 0: offset = rawOffset % (file.size + 65536)
        case 1: offset = (rawOffset % (file.size / 8 + 8192)) * 8
        case 2: offset = (rawOffset & 0xffff) << 9
        default: offset = UInt64.max - UInt64(rawOffset)
        }
        let lengths: [UInt64] = [0, 1, 8, 12, 16, 512, 4096, 65536]
        // A length field above 4 KiB is rare in the input's mutations; cap reads/writes so an
        // execution stays cheap (the model's cost is per operation, not per byte).
        var length = lengths[Int(lengthCode & 7)]
        if lengthCode & 0x38 == 0x38 { length = UInt64(pattern) }
        var bytes: [UInt8]
        if kind == .write || kind == .read {
            let count = Int(min(length, 1 << 14))
            if pattern & 1 == 1 && imageLength > 0 {
                let from = Int(pattern) % imageLength
                bytes = Array(imageBytes[from..<min(imageLength, from + count)])
            } else {
                bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: pattern >> 8), count: count)
                if count > 0 { bytes[0] = UInt8(truncatingIfNeeded: pattern) }
            }
            length = UInt64(count)
        } else {
            bytes = []
        }
        if kind == .read {
            // What a read returns is what is in the file.
            bytes = file.read(offset: offset, count: Int(length)) ?? []
        }
        var op = Operation(kind, offset: offset, data: bytes)
        if kind != .read && kind != .write { op.length = length }
        let step = engine.before(op, file: file)
        var succeeded = step.decision == .perform
        if step.decision == .perform {
            // Apply it as the kernel would; offsets past 1 GiB fail like a full disk.
            let end = offset.addingReportingOverflow(length)
            if end.overflow || end.partialValue > 1 << 30 {
                succeeded = false
            } else {
                switch kind {
                case .write: file.write(offset: offset, data: bytes)
                case .writeZeroes, .discard:
                    if offset < file.size {
                        let stop = min(file.size, end.partialValue)
                        file.write(offset: offset, data: [UInt8](repeating: 0, count: Int(stop - offset)))
                    }
                case .truncate:
                    if offset <= 1 << 24 {
                        if offset < file.size { file.bytes.removeLast(Int(file.size - offset)) }
                        else { file.bytes += [UInt8](repeating: 0, count: Int(offset - file.size)) }
                    }
                case .allocate:
                    if end.partialValue > file.size && end.partialValue <= 1 << 24 {
                        file.bytes += [UInt8](repeating: 0, count: Int(end.partialValue - file.size))
                    }
                case .read, .flush: break
                }
            }
            _ = engine.after(op, succeeded: succeeded, file: file)
        }
        _ = engine.modelName
        _ = engine.shadow?.l1.count
    }
    return 0
}
