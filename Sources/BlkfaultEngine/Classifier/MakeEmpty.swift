/// qcow2's make_completely_empty (qemu-img commit empties the top image through
/// bdrv_make_empty when it has no snapshots or bitmaps). Its I/O says where it stands:
///
/// 1. `l1_update`, write-zeroes over the whole active L1 table;
/// 2. `empty_image_prepare`, write-zeroes over the clusters after the header (a new
///    refcount table, a refblock and the L1 table go there);
/// 3. `l1_update` + `reftable_update`, the 20-byte header write at offset 40
///    (L1 offset, refcount table offset and clusters);
/// 4. `refblock_alloc`, the 8-byte write of the first refcount table entry;
/// 5. qcow2_alloc_clusters of the header, tables and refblock (`cluster_alloc`, its
///    refblock read, `refblock_alloc` + `refblock_load`), written back by mark-clean;
/// 6. the file is truncated; the close's full flush follows (`flush_to_os`).
enum MakeEmpty: Sendable, Equatable {
    case none, l1Zeroed, prepared, headerSwitched, refblockHooked, allocated, truncated
}
