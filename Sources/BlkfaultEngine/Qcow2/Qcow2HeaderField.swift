/// The qcow2 header's fields by the names docs/interop/qcow2.txt gives them, for
/// [corrupt] rules that name one.
public struct Qcow2HeaderField: Sendable, Equatable {
    public let name: String
    public let offset: UInt64
    /// Bytes (big-endian).
    public let size: Int

    public static let all: [Qcow2HeaderField] = [
        .init(name: "magic", offset: 0, size: 4),
        .init(name: "version", offset: 4, size: 4),
        .init(name: "backing_file_offset", offset: 8, size: 8),
        .init(name: "backing_file_size", offset: 16, size: 4),
        .init(name: "cluster_bits", offset: 20, size: 4),
        .init(name: "size", offset: 24, size: 8),
        .init(name: "crypt_method", offset: 32, size: 4),
        .init(name: "l1_size", offset: 36, size: 4),
        .init(name: "l1_table_offset", offset: 40, size: 8),
        .init(name: "refcount_table_offset", offset: 48, size: 8),
        .init(name: "refcount_table_clusters", offset: 56, size: 4),
        .init(name: "nb_snapshots", offset: 60, size: 4),
        .init(name: "snapshots_offset", offset: 64, size: 8),
        .init(name: "incompatible_features", offset: 72, size: 8),
        .init(name: "compatible_features", offset: 80, size: 8),
        .init(name: "autoclear_features", offset: 88, size: 8),
        .init(name: "refcount_order", offset: 96, size: 4),
        .init(name: "header_length", offset: 100, size: 4),
    ]

    public init?(name: String) {
        guard let field = Self.all.first(where: { $0.name == name }) else { return nil }
        self = field
    }

    private init(name: String, offset: UInt64, size: Int) {
        self.name = name; self.offset = offset; self.size = size
    }
}

/// `value`'s low `size` bytes, big-endian.
func bigEndianBytes(_ value: UInt64, size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: value >> UInt64(8 * (size - 1 - $0))) }
}
