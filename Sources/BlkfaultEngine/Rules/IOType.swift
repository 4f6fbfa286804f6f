/// The request kinds blkdebug tells apart (QAPI `BlkdebugIOType`, in QEMU's order).
public enum IOType: Int, CaseIterable, Sendable, Hashable {
    case read, write, writeZeroes, discard, flush, blockStatus

    /// The name a rule file's `iotype` uses.
    public var name: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .writeZeroes: "write-zeroes"
        case .discard: "discard"
        case .flush: "flush"
        case .blockStatus: "block-status"
        }
    }

    /// The iotype a rule file names, spelled exactly as QEMU spells it (case-sensitive).
    public init?(name: String) {
        guard let type = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = type
    }
}

/// The set of request kinds an inject rule applies to.
public struct IOTypeMask: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ type: IOType) { rawValue = 1 << UInt8(type.rawValue) }

    public static let read = IOTypeMask(.read)
    public static let write = IOTypeMask(.write)
    public static let writeZeroes = IOTypeMask(.writeZeroes)
    public static let discard = IOTypeMask(.discard)
    public static let flush = IOTypeMask(.flush)
    public static let blockStatus = IOTypeMask(.blockStatus)

    /// What a rule without `iotype` covers: everything but block-status.
    public static let blkdebugDefault: IOTypeMask = [.read, .write, .writeZeroes, .discard, .flush]

    public func contains(_ type: IOType) -> Bool { contains(IOTypeMask(type)) }
}
