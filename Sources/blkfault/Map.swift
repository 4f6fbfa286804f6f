import ArgumentParser
import BlkfaultEngine
import Foundation

/// `blkfault map IMAGE [--json]`: what every byte range of a qcow2 file is.
struct Map: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the layout of a qcow2 image: header, tables, data, free and leaked clusters.",
        discussion: """
            Regions are listed in file order; runs of data clusters that are contiguous both in the \
            file and in the guest are shown as one line. free: refcount 0 and referenced by nothing. \
            leaked: refcounted but referenced by nothing (qemu-img check's leaks).

            Exit status: 0; 2 if the walk found problems (listed as warnings); 1 if the file cannot \
            be read or is not a qcow2 image.
            """
    )

    @Argument(help: ArgumentHelp("The qcow2 image.", valueName: "IMAGE"))
    var image: String

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let layout = try MapReader.scan(image)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            say(String(decoding: try encoder.encode(MapJSON(image: image, layout: layout)), as: UTF8.self))
        } else {
            for line in MapText.render(image: image, layout: layout) { say(line) }
        }
        if !layout.warnings.isEmpty { throw ExitCode(2) }
    }
}

enum MapReader {
    /// Opens and walks an image; read errors and non-qcow2 files become `BlkfaultError`s naming the file.
    static func scan(_ path: String) throws(BlkfaultError) -> Qcow2Layout {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpen(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .cannotOpen(path, String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw .cannotOpen(path, "is a directory") }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw .cannotOpen(path, String(cString: strerror(errno))) }
        let size = UInt64(end)

        var ioError: Int32 = 0
        let result: Result<Qcow2Layout, Qcow2Error>
        do {
            result = .success(try Qcow2Layout.scan(fileSize: size) { offset, length in
                var buffer = [UInt8](repeating: 0, count: length)
                var done = 0
                while done < length {
                    let n = buffer.withUnsafeMutableBytes { raw in
                        pread(fd, raw.baseAddress! + done, length - done, off_t(offset) + off_t(done))
                    }
                    if n < 0 {
                        if errno == EINTR { continue }
                        ioError = errno
                        return nil
                    }
                    if n == 0 { break }
                    done += n
                }
                buffer.removeLast(length - done)
                return buffer
            })
        } catch {
            result = .failure(error)
        }
        if ioError != 0 { throw .cannotRead(path, String(cString: strerror(ioError))) }
        switch result {
        case .success(let layout): return layout
        case .failure(let e): throw .notQcow2(path, e.description)
        }
    }
}

// MARK: - Text

enum MapText {
    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// 65536 -> "64 KiB"; exact binary units when they divide, else one decimal.
    static func human(_ v: UInt64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(v), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        if unit == 0 { return "\(v) bytes" }
        if value == value.rounded() { return "\(Int(value)) \(units[unit])" }
        return String(format: "%.1f %@", value, units[unit])
    }

    static let incompatibleNames = ["dirty", "corrupt", "external data file", "compression type", "extended L2"]
    static let compatibleNames = ["lazy refcounts"]
    static let autoclearNames = ["bitmaps", "raw external data"]

    static func features(_ bits: UInt64, _ names: [String]) -> String {
        if bits == 0 { return "none" }
        var out: [String] = []
        for b in 0..<64 where bits & (1 << UInt64(b)) != 0 {
            out.append(b < names.count ? names[b] : "bit \(b)")
        }
        return out.joined(separator: ", ")
    }

    static func plural<N: BinaryInteger>(_ n: N, _ noun: String) -> String {
        "\(n) \(noun)\(n == 1 ? "" : "s")"
    }

    static func render(image: String, layout: Qcow2Layout) -> [String] {
        let h = layout.header, c = layout.counts
        var lines: [String] = []
        lines.append("\(image): qcow2 version \(h.version), \(layout.fileSize) bytes (\(c.fileClusters) clusters)")
        lines.append("  cluster size      \(h.clusterSize) (\(human(h.clusterSize)))")
        lines.append("  virtual size      \(h.size) (\(human(h.size)))")
        lines.append("  refcount bits     \(h.refcountBits)" + (h.version == 3 ? ", compression \(h.compressionType == 1 ? "zstd" : "zlib")" : ""))
        lines.append("  L1 table          \(h.l1Size) entr\(h.l1Size == 1 ? "y" : "ies") at \(hex(h.l1TableOffset))")
        lines.append("  refcount table    \(h.refcountTableClusters) cluster\(h.refcountTableClusters == 1 ? "" : "s") at \(hex(h.refcountTableOffset))")
        if h.version == 3 {
            lines.append("  incompatible      \(features(h.incompatibleFeatures, incompatibleNames))")
            lines.append("  compatible        \(features(h.compatibleFeatures, compatibleNames))")
            lines.append("  autoclear         \(features(h.autoclearFeatures, autoclearNames))")
        }
        if h.cryptMethod != 0 { lines.append("  encryption        \(h.cryptMethod == 1 ? "AES" : h.cryptMethod == 2 ? "LUKS" : "method \(h.cryptMethod)")") }
        if h.backingFileOffset != 0 { lines.append("  backing file      \(h.backingFileSize) bytes at \(hex(h.backingFileOffset))") }
        if h.nbSnapshots != 0 { lines.append("  snapshots         \(h.nbSnapshots) (table at \(hex(h.snapshotsOffset)))") }
        if !h.extensions.isEmpty {
            lines.append("  extensions        " + h.extensions.map { "\($0.name) (\($0.length) bytes)" }.joined(separator: ", "))
        }
        lines.append("")

        let offsetWidth = max(10, hex(layout.regions.last?.offset ?? 0).count)
        let lengthWidth = max(10, layout.regions.map { hex($0.length).count }.max() ?? 0)
        lines.append(pad("OFFSET", offsetWidth) + "  " + pad("LENGTH", lengthWidth) + "  WHAT")
        for r in layout.regions {
            var what = Qcow2Layout.describe(r)
            switch r.kind {
            case .data, .zeroData, .vmstate, .bitmapData, .free, .leaked:
                let n = (r.length + layout.clusterSize - 1) / layout.clusterSize
                what += ", " + plural(n, "cluster")
            default: break
            }
            if r.end > layout.fileSize { what += " (past end of file by \(r.end - layout.fileSize) bytes)" }
            lines.append(pad(hex(r.offset), offsetWidth) + "  " + pad(hex(r.length), lengthWidth) + "  " + what)
        }
        lines.append("")

        var totals: [String] = []
        totals.append(plural(c.l2Tables, "L2 table"))
        totals.append(plural(c.refcountBlocks, "refcount block"))
        totals.append(plural(c.dataClusters, "data cluster") + (c.zeroClusters > 0 ? " (\(c.zeroClusters) preallocated zero)" : ""))
        if c.compressedClusters > 0 { totals.append(plural(c.compressedClusters, "compressed cluster") + " (\(c.compressedBytes) bytes)") }
        if c.vmstateClusters > 0 { totals.append(plural(c.vmstateClusters, "vmstate cluster")) }
        if c.snapshotOnlyDataClusters > 0 { totals.append(plural(c.snapshotOnlyDataClusters, "snapshot-only data cluster")) }
        if c.externalDataClusters > 0 { totals.append(plural(c.externalDataClusters, "cluster") + " in the external data file") }
        if c.bitmapDataClusters > 0 { totals.append(plural(c.bitmapDataClusters, "bitmap data cluster")) }
        if c.snapshots > 0 { totals.append(plural(c.snapshots, "snapshot")) }
        if c.bitmaps > 0 { totals.append(plural(c.bitmaps, "bitmap")) }
        lines.append("totals: " + totals.joined(separator: ", "))
        lines.append("clusters: \(c.fileClusters) in file, \(c.referencedClusters) referenced, \(c.refcountedClusters) refcounted, "
            + "\(c.freeClusters) free, \(c.leakedClusters) leaked"
            + (c.unrefcountedClusters > 0 ? ", \(c.unrefcountedClusters) referenced with refcount 0" : "")
            + (c.sweepComplete ? "" : " (sweep incomplete)"))
        if layout.warnings.isEmpty {
            lines.append("warnings: none")
        } else {
            lines.append("warnings:")
            for w in layout.warnings { lines.append("  " + w) }
        }
        return lines
    }
}

// MARK: - JSON

struct MapJSON: Encodable {
    struct Header: Encodable {
        let version: UInt32
        let clusterBits: UInt32
        let clusterSize: UInt64
        let virtualSize: UInt64
        let refcountBits: UInt64
        let compressionType: UInt8
        let cryptMethod: UInt32
        let incompatibleFeatures: UInt64
        let compatibleFeatures: UInt64
        let autoclearFeatures: UInt64
        let l1Size: UInt32
        let l1TableOffset: UInt64
        let refcountTableOffset: UInt64
        let refcountTableClusters: UInt32
        let nbSnapshots: UInt32
        let snapshotsOffset: UInt64
        let backingFileOffset: UInt64
        let backingFileSize: UInt32
        let headerLength: UInt32
        let extensions: [Extension]
    }
    struct Extension: Encodable {
        let type: UInt32
        let name: String
        let offset: UInt64
        let length: UInt32
    }
    struct Region: Encodable {
        let offset: UInt64
        let length: UInt64
        let kind: String
        let description: String
        let l1Index: Int?
        let refcountTableIndex: Int?
        let bitmap: Int?
        let guestOffset: UInt64?
        let vmstateOffset: UInt64?
        let snapshot: Int?
        let extensionType: UInt32?
    }
    struct Counts: Encodable {
        let fileClusters, dataClusters, zeroClusters, vmstateClusters, compressedClusters, compressedBytes: UInt64
        let snapshotOnlyDataClusters, externalDataClusters, bitmapDataClusters: UInt64
        let freeClusters, leakedClusters, unrefcountedClusters, refcountedClusters, referencedClusters: UInt64
        let l2Tables, refcountBlocks, snapshots, bitmaps: Int
        let sweepComplete: Bool
    }

    let file: String
    let fileSize: UInt64
    let header: Header
    let regions: [Region]
    let counts: Counts
    let warnings: [String]

    init(image: String, layout: Qcow2Layout) {
        let h = layout.header, c = layout.counts
        file = image
        fileSize = layout.fileSize
        header = Header(
            version: h.version, clusterBits: h.clusterBits, clusterSize: h.clusterSize, virtualSize: h.size,
            refcountBits: h.refcountBits, compressionType: h.compressionType, cryptMethod: h.cryptMethod,
            incompatibleFeatures: h.incompatibleFeatures, compatibleFeatures: h.compatibleFeatures,
            autoclearFeatures: h.autoclearFeatures, l1Size: h.l1Size, l1TableOffset: h.l1TableOffset,
            refcountTableOffset: h.refcountTableOffset, refcountTableClusters: h.refcountTableClusters,
            nbSnapshots: h.nbSnapshots, snapshotsOffset: h.snapshotsOffset,
            backingFileOffset: h.backingFileOffset, backingFileSize: h.backingFileSize,
            headerLength: h.version == 2 ? 72 : h.headerLength,
            extensions: h.extensions.map { Extension(type: $0.type, name: $0.name, offset: $0.dataOffset - 8, length: $0.length) })
        regions = layout.regions.map { r in
            Region(
                offset: r.offset, length: r.length, kind: r.kind.rawValue, description: Qcow2Layout.describe(r),
                l1Index: r.kind == .l2Table ? r.index : nil,
                refcountTableIndex: r.kind == .refcountBlock ? r.index : nil,
                bitmap: (r.kind == .bitmapTable || r.kind == .bitmapData) ? r.index : nil,
                guestOffset: (r.kind == .data || r.kind == .zeroData || r.kind == .compressed) ? r.guestOffset : nil,
                vmstateOffset: r.kind == .vmstate ? r.guestOffset : nil,
                snapshot: r.snapshot.map { $0 + 1 }, extensionType: r.extensionType)
        }
        counts = Counts(
            fileClusters: c.fileClusters, dataClusters: c.dataClusters, zeroClusters: c.zeroClusters,
            vmstateClusters: c.vmstateClusters, compressedClusters: c.compressedClusters, compressedBytes: c.compressedBytes,
            snapshotOnlyDataClusters: c.snapshotOnlyDataClusters, externalDataClusters: c.externalDataClusters,
            bitmapDataClusters: c.bitmapDataClusters, freeClusters: c.freeClusters, leakedClusters: c.leakedClusters,
            unrefcountedClusters: c.unrefcountedClusters, refcountedClusters: c.refcountedClusters,
            referencedClusters: c.referencedClusters, l2Tables: c.l2Tables, refcountBlocks: c.refcountBlocks,
            snapshots: c.snapshots, bitmaps: c.bitmaps, sweepComplete: c.sweepComplete)
        warnings = layout.warnings
    }
}
