/// Why a file could not be read as a qcow2 image. The engine then follows the
/// file in raw mode (generic events only) and says so once.
public enum Qcow2Error: Error, Equatable, Sendable, CustomStringConvertible {
    case tooShort(Int)
    case badMagic
    case unsupportedVersion(UInt32)
    case badClusterBits(UInt32)
    case badRefcountOrder(UInt32)
    case badHeaderLength(UInt32)
    case tableOutOfBounds(String)
    case truncated(String)

    public var description: String {
        switch self {
        case .tooShort(let n): return "file too short for a qcow2 header (\(n) bytes)"
        case .badMagic: return "no qcow2 magic"
        case .unsupportedVersion(let v): return "unsupported qcow2 version \(v)"
        case .badClusterBits(let b): return "cluster_bits \(b) outside 9...21"
        case .badRefcountOrder(let o): return "refcount_order \(o) outside 0...6"
        case .badHeaderLength(let l): return "header_length \(l) invalid"
        case .tableOutOfBounds(let what): return "\(what) lies outside any sane bound"
        case .truncated(let what): return "\(what) extends past the end of the file"
        }
    }
}

/// A header extension: where its data sits in cluster 0.
public struct Qcow2HeaderExtension: Sendable, Equatable {
    public let type: UInt32
    public let dataOffset: UInt64
    public let length: UInt32

    public static let backingFormat: UInt32 = 0xe279_2aca
    public static let featureNameTable: UInt32 = 0x6803_f857
    public static let bitmaps: UInt32 = 0x2385_2875
    public static let fullDiskEncryption: UInt32 = 0x0537_be77
    public static let externalDataFile: UInt32 = 0x4441_5441

    public var name: String {
        switch type {
        case Self.backingFormat: return "backing format"
        case Self.featureNameTable: return "feature name table"
        case Self.bitmaps: return "bitmaps"
        case Self.fullDiskEncryption: return "full disk encryption"
        case Self.externalDataFile: return "external data file"
        default: return "unknown (0x" + String(type, radix: 16) + ")"
        }
    }
}

/// The qcow2 header (v2 and v3), field by field as docs/interop/qcow2.txt lays it out.
public struct Qcow2Header: Sendable, Equatable {
    public static let magic: UInt32 = 0x5146_49fb
    /// QEMU reads this many bytes at open; v2 headers are 72 bytes.
    public static let readLength = 112

    public var version: UInt32
    public var backingFileOffset: UInt64
    public var backingFileSize: UInt32
    public var clusterBits: UInt32
    public var size: UInt64
    public var cryptMethod: UInt32
    public var l1Size: UInt32
    public var l1TableOffset: UInt64
    public var refcountTableOffset: UInt64
    public var refcountTableClusters: UInt32
    public var nbSnapshots: UInt32
    public var snapshotsOffset: UInt64
    public var incompatibleFeatures: UInt64
    public var compatibleFeatures: UInt64
    public var autoclearFeatures: UInt64
    public var refcountOrder: UInt32
    public var headerLength: UInt32
    public var compressionType: UInt8
    public var extensions: [Qcow2HeaderExtension] = []

    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    public var extendedL2: Bool { incompatibleFeatures & (1 << 4) != 0 }
    public var hasExternalDataFile: Bool { incompatibleFeatures & (1 << 2) != 0 }
    public var l2EntrySize: UInt64 { extendedL2 ? 16 : 8 }
    /// Entries per L2 table.
    public var l2Entries: UInt64 { clusterSize / l2EntrySize }
    public var refcountBits: UInt64 { 1 << UInt64(refcountOrder) }
    /// Refcount entries per refcount block.
    public var refblockEntries: UInt64 { clusterSize * 8 / refcountBits }
    @inline(__always)  // (region(at:): called, the header was copied to the stack first)
    public var refcountTableSize: UInt64 { UInt64(refcountTableClusters) * clusterSize }
    /// Guest bytes one L1 entry covers.
    public var bytesPerL1Entry: UInt64 { clusterSize * l2Entries }
    /// First L1 index of the VM state area (right past the disk).
    public var vmStateL1Index: UInt64 { (size + bytesPerL1Entry - 1) / bytesPerL1Entry }

    /// A version 2 header with 64 KiB clusters and no tables (a placeholder, never an image's).
    static let placeholder: Qcow2Header = {
        var b = filledArray(UInt8(0), count: 72)
        for (i, v) in [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 2].enumerated() { b[i] = UInt8(v) }
        b[23] = 16
        return try! Qcow2Header(bytes: b)
    }()

    /// Parses the fixed header from the first bytes of the file (at least 72; QEMU reads 112).
    public init(bytes b: [UInt8]) throws(Qcow2Error) {
        guard b.count >= 72 else { throw .tooShort(b.count) }
        guard b.be32(at: 0) == Self.magic else { throw .badMagic }
        version = b.be32(at: 4)
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        backingFileOffset = b.be64(at: 8)
        backingFileSize = b.be32(at: 16)
        clusterBits = b.be32(at: 20)
        guard (9...21).contains(clusterBits) else { throw .badClusterBits(clusterBits) }
        size = b.be64(at: 24)
        cryptMethod = b.be32(at: 32)
        l1Size = b.be32(at: 36)
        l1TableOffset = b.be64(at: 40)
        refcountTableOffset = b.be64(at: 48)
        refcountTableClusters = b.be32(at: 56)
        nbSnapshots = b.be32(at: 60)
        snapshotsOffset = b.be64(at: 64)
        if version == 2 {
            incompatibleFeatures = 0; compatibleFeatures = 0; autoclearFeatures = 0
            refcountOrder = 4; headerLength = 72; compressionType = 0
        } else {
            guard b.count >= 104 else { throw .tooShort(b.count) }
            incompatibleFeatures = b.be64(at: 72)
            compatibleFeatures = b.be64(at: 80)
            autoclearFeatures = b.be64(at: 88)
            refcountOrder = b.be32(at: 96)
            headerLength = b.be32(at: 100)
            guard headerLength >= 104, headerLength % 8 == 0, UInt64(headerLength) <= (1 << UInt64(clusterBits))
            else { throw .badHeaderLength(headerLength) }
            compressionType = headerLength > 104 && b.count > 104 ? b[104] : 0
        }
        guard refcountOrder <= 6 else { throw .badRefcountOrder(refcountOrder) }
        // QEMU's own limits: 32 MiB of L1, 8 MiB of refcount table.
        guard UInt64(l1Size) * 8 <= 32 << 20 else { throw .tableOutOfBounds("L1 table (\(l1Size) entries)") }
        guard refcountTableSize <= 8 << 20 else { throw .tableOutOfBounds("refcount table (\(refcountTableClusters) clusters)") }
    }

    /// Reads the header extensions from the whole first cluster (or as much of it as exists).
    public mutating func parseExtensions(cluster0 b: [UInt8]) {
        var pos = Int(version == 2 ? 72 : headerLength)
        var found: [Qcow2HeaderExtension] = []
        while pos + 8 <= b.count, found.count < 64 {
            let type = b.be32(at: pos), length = b.be32(at: pos + 4)
            if type == 0 { break }
            let dataOffset = pos + 8
            guard UInt64(dataOffset) + UInt64(length) <= UInt64(b.count) else { break }
            found.append(.init(type: type, dataOffset: UInt64(dataOffset), length: length))
            pos = dataOffset + (Int(length) + 7) / 8 * 8
        }
        extensions = found
    }
}

/// Entry masks shared by L1, L2 and refcount table entries.
public enum Qcow2Entry {
    public static let copied: UInt64 = 1 << 63
    public static let compressed: UInt64 = 1 << 62
    /// Bits 9...55: a cluster-aligned host offset.
    public static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    public static let zeroFlag: UInt64 = 1
}
