"""Scenario definitions for the blkfault parity harness (see parity.py).

A *workload* is what happens to one image: `qemu-img create`, optional qemu-io
pre-steps that run WITHOUT injection, then one or more qemu-io processes that
run WITH the rule file (through real blkdebug for the reference, through the
preload for the subject, with no rules at all for the baseline).

A *case* is a workload plus a rule file.  Matrix cases are generated from
(event, errno, once, immediately, workload); chain cases are hand-written rule
files that exercise blkdebug's state machine.

Everything here is data; parity.py runs it.  Facts about which event is raised
where come from /work/shared/notes/qemu-blkdebug.md (§3.2, §3.4, §5.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product

# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    cluster_size: int
    size: str
    # Each entry is ONE qemu-io process; each process is a tuple of -c commands.
    pre: tuple[tuple[str, ...], ...]  # without injection
    runs: tuple[tuple[str, ...], ...]  # with the rule file
    desc: str
    cost: int = 1  # rough relative cost, used only to order the work queue
    # Extra `qemu-img create -o` options (refcount_bits=1, compat=0.10, ...).
    opts: str = ""
    # Non-empty: the image is an overlay of TEST_DIR/base.qcow2, which is created
    # with the same options and gets these qemu-io processes first (no injection).
    base: tuple[tuple[str, ...], ...] = ()
    # A process whose first word is "qemu-img" is a qemu-img command instead of
    # qemu-io -c commands: the word IMG stands for the image (blkdebug:RULES:IMG
    # for the reference), TEST_DIR/ for the run directory.
    snapshots: bool = False  # mask the snapshot table's dates when hashing
    # The base image's format ("raw": TEST_DIR/base.raw, named with -F raw).
    base_fmt: str = "qcow2"
    # Other files of the run directory whose bytes are compared too (an external data file).
    hash_files: tuple[str, ...] = ()
    # Further (offset, length) ranges zeroed when hashing: the dates of a snapshot table
    # that a failed command leaves leaked in the file (the header no longer names it).
    mask_ranges: tuple[tuple[int, int], ...] = ()
    # Further environment for the preload's runs (not the reference's): a switch that
    # gives blkdebug's side effects, e.g. BLKFAULT_ALLOCATED_SIZE=length.
    preload_env: tuple[tuple[str, str], ...] = ()

    def create_opts(self) -> str:
        return f"cluster_size={self.cluster_size}" + (f",{self.opts}" if self.opts else "")


def _w(key, cs, size, pre, runs, desc, cost=1, opts="", base=(), snapshots=False,
       base_fmt="qcow2"):
    return Workload(key, cs, size, tuple(tuple(p) for p in pre),
                    tuple(tuple(r) for r in runs), desc, cost, opts,
                    tuple(tuple(b) for b in base), snapshots, base_fmt)


def img(*args) -> list[str]:
    """A qemu-img process (see Workload.runs)."""
    return ["qemu-img", *args]


WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    # iotest 026, section 1 (1 KiB clusters, fresh 1 GiB image)
    _w("w128", 1024, "1G", [], [["write 0 128k"]],
       "026 §1: write 0 128k on a fresh image"),
    _w("w128b", 1024, "1G", [], [["write -b 0 128k"]],
       "026 §1: write -b 0 128k (vmstate) on a fresh image"),
    _w("l2upd", 1024, "1G", [["write 0 512"]], [["write 0 128k"]],
       "026 §1 l2_update variant: plain write 0 512 first, then write 0 128k"),
    _w("l2updb", 1024, "1G", [["write -b 0 512"]], [["write -b 0 128k"]],
       "026 §1 l2_update variant with -b"),
    _w("l2load", 1024, "1G", [],
       [["write 0 128k"], ["write 0 128k"], ["read 0 128k"]],
       "026 §1 l2_load variant: three processes write, write, read"),
    _w("l2loadb", 1024, "1G", [],
       [["write -b 0 128k"], ["write -b 0 128k"], ["read -b 0 128k"]],
       "026 §1 l2_load variant with -b"),
    # iotest 026, section 2 (512-byte clusters: refcount table growth)
    _w("refgrow", 512, "1G", [], [["write 0 64M"]],
       "026 §2: write 0 64M with 512-byte clusters (refblock/reftable growth)", cost=40),
    _w("refgrowb", 512, "1G", [], [["write -b 0 64M"]],
       "026 §2: write -b 0 64M with 512-byte clusters", cost=40),
    # iotest 026, section 3
    _w("l1grow", 1024, "1G", [], [["write -b 0 64k"]],
       "026 §3: write -b 0 64k (vmstate forces L1 growth)"),
    # iotest 026, sections 4 and 5 (whole scenarios, used by chains/matrix too)
    _w("leak", 1024, "64M", [], [["write 0 1M", "write 0 1M"]],
       "026 §4: two writes of 1M in one process on a 64M image", cost=2),
    _w("prezero", 1024, "1024", [["write 0 1024"], ["write -z 0 1024"]],
       [["write 0 1024"]],
       "026 §5: preallocated zero cluster, then write 0 1024"),
    # beyond 026: reach the remaining events
    _w("read", 1024, "1G", [["write 0 128k"]], [["read 0 128k"]],
       "read of written data in a new process (l2_load, read_aio)"),
    _w("readb", 1024, "1G", [["write -b 0 64k"]], [["read -b 0 64k"]],
       "read -b of written vmstate in a new process (vmstate_load)"),
    _w("zero", 1024, "1G", [["write 0 64k"]], [["write -z 0 64k"]],
       "write -z over allocated clusters (zero flag in L2)"),
    _w("zerou", 1024, "1G", [["write 0 64k"]], [["write -z -u 0 64k"]],
       "write -z -u over allocated clusters (cluster_free + discard)"),
    _w("discard", 1024, "1G", [["write 0 64k"]], [["discard 0 64k"]],
       "discard of allocated clusters (cluster_free + discard)"),
    _w("partial", 1024, "1G", [], [["write 1536 1k"]],
       "partial-cluster write on a fresh image (cluster_alloc_space, pwritev_zero)"),
    _w("multi", 1024, "1G", [], [["write 0 4k", "write 64k 4k", "flush"]],
       "one process: write 0 4k, write 64k 4k, flush (flush_to_disk on the 2nd write)"),
    # used by chain cases only
    _w("two_l2", 1024, "1G", [], [["write 0 4k", "write 128k 4k"]],
       "one process, two writes that each allocate an L2 table"),
    _w("two_l2_sep", 1024, "1G", [], [["write 0 4k"], ["write 128k 4k"]],
       "two processes, each allocating an L2 table (state resets per process)"),
    _w("write_read", 1024, "1G", [], [["write 0 4k", "read 0 4k"]],
       "one process: write 0 4k then read 0 4k"),
    _w("write3", 1024, "1G", [], [["write 0 4k", "write 64k 4k", "write 128k 4k"]],
       "one process, three writes (notes §7.2 flush-latch experiment)"),
    _w("write_write_read", 1024, "1G", [],
       [["write 0 4k", "write 64k 4k", "read 0 4k"]],
       "one process: two writes, then a read"),
]}

# Issue 3: compression, copy-on-write, backing files, snapshots, qemu-img commands
# and more geometries.  These use the default 64 KiB clusters unless said.
_SNAP = img("snapshot", "-c", "s1", "IMG")
EXTRA_WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    # One cluster per write -c: the clusters of one request are compressed by
    # concurrent tasks, which take their host offsets in a random order.
    _w("wc", 65536, "1G", [], [["write -c 0 64k", "write -c 64k 64k"]],
       "write -c of two clusters on a fresh image (they share a host cluster)"),
    _w("wc1k", 1024, "1G", [["write 0 4k"]],
       [["write -c 64k 1k", "write -c 65k 1k", "write -c 66k 1k"]],
       "write -c of three 1 KiB clusters into an existing L2 table"),
    _w("rc", 65536, "1G", [["write -c 0 64k", "write -c 64k 64k"]], [["read 0 128k"]],
       "read of compressed clusters in a new process (read_compressed)"),
    _w("cowc", 65536, "1G", [["write -c 0 64k"]], [["write 512 512"]],
       "partial write over a compressed cluster (cow_read, read_compressed, cow_write)"),
    _w("bread", 65536, "1G", [], [["read 0 128k", "write 1M 4k"]],
       "overlay: read of clusters only the backing file has, then a write",
       base=[["write -P 1 0 128k"]]),
    _w("bcow", 65536, "1G", [], [["write 512 512"]],
       "overlay: partial write over backing data (cow_read, read_backing_aio, cow_write)",
       base=[["write -P 1 0 128k"]]),
    _w("snapc", 1024, "1G", [["write 0 128k"]], [_SNAP],
       "qemu-img snapshot -c on an image with data", snapshots=True),
    _w("snapw", 1024, "1G", [["write 0 128k"], _SNAP], [["write 512 512"]],
       "partial write into clusters shared with a snapshot (l2_alloc_cow_read, COW)",
       snapshots=True),
    _w("snapa", 1024, "1G", [["write 0 128k"], _SNAP, ["write -P 2 0 64k"]],
       [img("snapshot", "-a", "s1", "IMG")], "qemu-img snapshot -a", snapshots=True),
    _w("snapd", 1024, "1G", [["write 0 128k"], _SNAP, ["write -P 2 0 64k"]],
       [img("snapshot", "-d", "s1", "IMG")], "qemu-img snapshot -d", snapshots=True),
    _w("grow", 1024, "1G", [["write 0 128k"]], [img("resize", "-f", "qcow2", "IMG", "2G")],
       "qemu-img resize 1G -> 2G with 1 KiB clusters (L1 growth)"),
    _w("shrink", 65536, "1G", [["write 0 128k", "write 600M 64k"]],
       [img("resize", "-f", "qcow2", "--shrink", "IMG", "512M")],
       "qemu-img resize --shrink 1G -> 512M (l1_shrink_*)"),
    _w("checkr", 1024, "1G", [["write 0 128k"]],
       [img("check", "-f", "qcow2", "-r", "all", "IMG")],
       "qemu-img check -r all under injection"),
    _w("convert", 1024, "1G",
       [img("create", "-q", "-f", "qcow2", "TEST_DIR/src.qcow2", "1G"),
        ["@src.qcow2", "write -P 3 0 128k"]],
       [img("convert", "-n", "-f", "qcow2", "-O", "qcow2", "TEST_DIR/src.qcow2", "IMG")],
       "qemu-img convert -n into the matched image"),
]}
# Backing files (issue 3): the overlay's node gets read_backing_aio (and cow_read before a
# COW from the backing file) while the read goes to the backing file, which blkfault
# follows for a matched overlay. qcow2 and raw backing files.
_B1 = [["write -P 1 0 128k"]]
_CHAIN = [img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "TEST_DIR/mid.qcow2", "1G"),
          img("rebase", "-u", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "IMG")]
EXTRA_WORKLOADS.update({w.key: w for w in [
    _w("braw", 65536, "1G", [], [["read 0 128k", "write 1M 4k"]],
       "raw backing: read of clusters only the backing file has, then a write",
       base=_B1, base_fmt="raw"),
    _w("brawc", 65536, "1G", [], [["write 512 512", "read 0 128k"]],
       "raw backing: partial write over backing data (merged COW), then a read",
       base=_B1, base_fmt="raw"),
    _w("bcowe", 65536, "1G", [], [["write 64k 512"]],
       "overlay: write at a cluster start over backing data (COW of the tail only: "
       "data + tail in one write)", base=_B1),
    _w("bcowg", 65536, "1G", [], [["write 1k 32k"]],
       "overlay: partial write with more than 16 KiB between head and tail (two COW reads)",
       base=_B1),
    _w("bmix", 65536, "1G", [["write -P 2 64k 64k"]], [["read 0 192k"], ["write 0 4k"]],
       "overlay with one cluster of its own: a read across it and backing clusters, then "
       "a write in a new process", base=_B1),
    _w("bcor", 65536, "1G", [], [["-C", "read 0 64k", "read 64k 64k"]],
       "qemu-io -C (copy-on-read) reads of backing data", base=_B1),
    _w("bcorraw", 65536, "1G", [], [["-C", "read 0 128k", "write 1M 4k"]],
       "qemu-io -C over a raw backing file, then a write", base=_B1, base_fmt="raw"),
    _w("bhole", 65536, "1G", [], [["read 1M 64k", "write 2M 4k"]],
       "overlay: read of clusters neither the overlay nor its backing file has (the "
       "backing file's L2 table is read), then a write", base=_B1),
    _w("bnol2", 65536, "1G", [], [["read 600M 64k", "write 2M 4k"]],
       "overlay: read where the backing file has no L2 table either (no I/O at all), "
       "then a write", base=_B1),
    _w("brebase", 65536, "1G",
       [img("create", "-q", "-f", "qcow2", "TEST_DIR/base2.qcow2", "1G"),
        ["@base2.qcow2", "write -P 3 64k 64k"]],
       [img("rebase", "-f", "qcow2", "-b", "REL:base2.qcow2", "-F", "qcow2", "IMG")],
       "qemu-img rebase onto another base: old and new backing files are read apart "
       "from the overlay's own backing chain; through blkdebug QEMU opens the new one "
       "(named relative to the overlay) under a blkdebug node of its own, so the preload "
       "matches it too (REL:)", base=_B1),
    # A three-file chain: the overlay's backing file mid.qcow2 (no data) has base.qcow2.
    _w("bchain", 65536, "1G", _CHAIN, [["read 0 64k", "write 1M 4k"], ["write 512 512"]],
       "chain base <- mid <- overlay: a read of data only the base has, then a write; "
       "a partial write over it (COW through the chain) in a new process", base=_B1),
    _w("bcommit", 65536, "1G", [["write -P 2 0 64k"]], [img("commit", "-f", "qcow2", "IMG")],
       "qemu-img commit of an overlay into its qcow2 backing file", base=_B1),
]})
# Geometries: the same two processes (write 0 128k; read 0 128k) on each.
GEOMETRIES = {
    "g512": (512, ""), "g4k": (4096, ""), "g64k": (65536, ""), "g2m": (2 << 20, ""),
    "rb1": (65536, "refcount_bits=1"), "rb64": (65536, "refcount_bits=64"),
    "v2": (65536, "compat=0.10"), "lazy": (65536, "lazy_refcounts=on"),
    "xl2": (65536, "extended_l2=on"),
}
for _k, (_cs, _o) in GEOMETRIES.items():
    EXTRA_WORKLOADS[_k] = _w(_k, _cs, "1G", [], [["write 0 128k"], ["read 0 128k"]],
                             f"cluster_size={_cs}{(',' + _o) if _o else ''}: "
                             "write 0 128k, then read 0 128k", opts=_o)
WORKLOADS.update(EXTRA_WORKLOADS)

# Issue 3b: QEMU's iotests 098 (qemu-img commit empties the top image:
# make_completely_empty) and 217 (qemu-img snapshot -d with cluster_free failing), on
# their images (64 MiB, 64 KiB clusters). The base of 098 is empty; a read stands in for
# the base's own qemu-io process.
IOTEST_3B_WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    _w("commit098", 65536, "64M", [["write 0 64k"]], [img("commit", "IMG")],
       "iotest 098: qemu-img commit of an overlay with data (bdrv_make_empty)",
       base=[["read 0 64k"]]),
    # The snapshot table that -c writes is at 458752 (after header, reftable, refblock,
    # L1, L2, data and the L1 copy); its date (16..24) stays in the file when -d fails.
    replace(_w("snapd217", 65536, "64M", [["write 0 64k"], img("snapshot", "-c", "foo", "IMG")],
               [img("snapshot", "-d", "foo", "IMG")],
               "iotest 217: qemu-img snapshot -d (cluster_free of the old table and the L1 table)",
               snapshots=True), mask_ranges=((458752 + 16, 8),)),
]}
WORKLOADS.update(IOTEST_3B_WORKLOADS)
# Events each is crossed with (errno 5, once on/off; every event with --full).
IOTEST_3B_EVENTS: dict[str, list[str]] = {
    # flush_to_os: its one raise is the close's flush, whose fdatasync blkdebug fails once
    # and qcow2_close retries; the preload performs it and counts the rule as fired
    # (a failed fdatasync would be latched by file-posix).
    "commit098": ["l1_update", "empty_image_prepare", "reftable_update", "refblock_alloc",
                  "cluster_alloc", "refblock_load", "refblock_update_part", "flush_to_os",
                  "pwritev", "pwritev_zero", "l2_load", "read_aio"],
    "snapd217": ["cluster_free", "refblock_alloc", "refblock_load", "l2_load", "l2_update",
                 "refblock_update_part", "cluster_alloc", "flush_to_os", "pwritev"],
}

# --------------------------------------------------------------------------
# The event matrix
# --------------------------------------------------------------------------

MATRIX_EVENTS = [
    "l1_update", "l2_load", "l2_update", "l2_alloc_write", "write_aio", "read_aio",
    "refblock_load", "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks", "refblock_alloc_write_table",
    "refblock_alloc_switch_table", "reftable_load", "reftable_grow",
    "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "vmstate_save", "vmstate_load", "cluster_alloc", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev", "pwritev_done", "pwritev_zero", "none",
    # issue 3
    "write_compressed", "cluster_alloc_bytes", "l2_update_compressed", "read_compressed",
    "cow_read", "cow_write", "read_backing_aio", "l2_alloc_cow_read",
    "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cluster_alloc_space",
    "cor_write",
    # issue 3b (qemu-img commit)
    "reftable_update", "empty_image_prepare",
]
ERRNOS = (5, 28)
ONCE = ("on", "off")
IMMEDIATELY = ("off", "on")

# Workloads of the full cross product (--full): every matrix event × every one of these.
FULL_WORKLOADS = [
    "w128", "w128b", "l2upd", "l2updb", "l2load", "l2loadb", "refgrow", "refgrowb",
    "l1grow", "leak", "prezero", "read", "readb", "zero", "zerou", "discard", "partial",
    "multi",
]

# Default set: per event, the workloads where the event is actually raised and a
# rule on it changes something (chosen from a --full run against real blkdebug,
# see README.md), plus one no-injection control (a rule that never fires must not
# change anything in the subject either; the last entry of each list).  The
# refcount-growth workloads (seconds per run instead of milliseconds) are used
# only for the refblock_alloc_*/reftable_grow events that need them.
DEFAULT_PAIRS: dict[str, list[str]] = {
    # event:                      workloads where a rule on it injects (measured with
    #                               --full against blkdebug) ... + no-injection control
    "l1_update":                   ["w128", "w128b", "l2load", "l1grow", "partial", "multi",
                                    "l2upd"],
    "l2_load":                     ["l2upd", "l2load", "l2loadb", "read", "readb", "zerou",
                                    "prezero", "w128"],
    "l2_update":                   ["w128", "w128b", "l2upd", "l2updb", "l2load", "l1grow",
                                    "zerou", "discard", "multi", "prezero", "read"],
    "l2_alloc_write":              ["w128", "w128b", "l2load", "l1grow", "partial", "multi",
                                    "l2upd"],
    "write_aio":                   ["w128", "w128b", "l2upd", "l2load", "leak", "prezero",
                                    "partial", "multi", "read"],
    "read_aio":                    ["l2load", "l2loadb", "read", "readb", "w128"],
    "refblock_load":               ["w128", "w128b", "l2upd", "l2load", "zerou", "discard",
                                    "multi", "read"],
    "refblock_update_part":        ["w128", "w128b", "l2upd", "l2load", "zerou", "discard",
                                    "multi", "read"],
    "refblock_alloc":              ["w128", "w128b", "l2upd", "l2load", "zerou", "discard",
                                    "multi", "read"],
    "refblock_alloc_hookup":       ["refgrow", "refgrowb", "leak", "w128"],
    "refblock_alloc_write":        ["refgrow", "refgrowb", "leak", "w128"],
    "refblock_alloc_write_blocks": ["refgrow", "refgrowb", "w128"],
    "refblock_alloc_write_table":  ["refgrow", "refgrowb", "w128"],
    "refblock_alloc_switch_table": ["refgrow", "refgrowb", "w128"],
    "reftable_load":               ["w128", "read", "l2load", "multi"],  # fires at every open
    "reftable_grow":               ["refgrow", "refgrowb", "w128"],
    "l1_grow_alloc_table":         ["l1grow", "w128b", "l2loadb", "w128"],
    "l1_grow_write_table":         ["l1grow", "w128b", "l2loadb", "w128"],
    "l1_grow_activate_table":      ["l1grow", "w128b", "l2loadb", "w128"],
    "vmstate_save":                ["w128b", "l2updb", "l2loadb", "l1grow", "w128"],
    "vmstate_load":                ["readb", "l2loadb", "read"],
    "cluster_alloc":               ["w128", "w128b", "l2updb", "l2load", "l1grow", "leak",
                                    "partial", "multi", "l2upd"],
    "cluster_free":                ["zerou", "discard", "w128b", "l1grow", "l2loadb", "zero"],
    "flush_to_os":                 ["w128", "l2upd", "l2load", "zero", "zerou", "discard",
                                    "multi", "prezero", "leak", "read"],
    "flush_to_disk":               ["leak", "discard", "multi", "w128"],
    "pwritev":                     ["w128", "l2upd", "l2load", "zero", "zerou", "discard",
                                    "multi", "prezero", "read"],
    "pwritev_done":                ["w128", "l2upd", "l2load", "zero", "zerou", "discard",
                                    "multi", "prezero", "read"],
    "pwritev_zero":                ["partial", "zerou", "w128"],
    "none":                        ["w128", "read", "multi", "zerou", "l2load"],
}

BACKING_WORKLOADS = ["braw", "brawc", "bcowe", "bcowg", "bmix", "bcor", "bcorraw", "bhole",
                     "bnol2", "bchain", "bcommit", "brebase"]
# Issue 3 pairs: run with errno 5/28 x once on/off, immediately off (immediately never
# changed blkdebug's result); --full adds immediately on.
EXTRA_PAIRS: dict[str, list[str]] = {
    "write_compressed":            ["wc", "wc1k", "w128"],
    "cluster_alloc_bytes":         ["wc", "wc1k", "w128"],
    "l2_update_compressed":        ["wc", "wc1k", "w128"],
    "read_compressed":             ["rc", "cowc", "read"],
    "cow_read":                    ["cowc", "bcow", "snapw", "w128"] + BACKING_WORKLOADS,
    "cow_write":                   ["cowc", "bcow", "snapw", "w128"] + BACKING_WORKLOADS,
    "read_backing_aio":            ["bread", "bcow", "w128"] + BACKING_WORKLOADS,
    "cor_write":                   ["bcor", "bcorraw"],
    "read_aio":                    BACKING_WORKLOADS,
    "write_aio":                   BACKING_WORKLOADS,
    "l2_alloc_cow_read":           ["snapw", "w128"],
    "l1_shrink_write_table":       ["shrink"],
    "l1_shrink_free_l2_clusters":  ["shrink"],
    "cluster_alloc_space":         ["partial", "g2m", "w128"],
}
# Events every command workload and geometry is crossed with (errno 5, once on/off).
COMMAND_EVENTS = ["l2_load", "l2_update", "l1_update", "refblock_update_part",
                  "cluster_alloc", "write_aio", "flush_to_os", "pwritev"]
GEOMETRY_EVENTS = ["l1_update", "l2_alloc_write", "l2_update", "write_aio",
                   "cluster_alloc", "refblock_update_part", "l2_load", "read_aio"]
COMMAND_WORKLOADS = ["snapc", "snapw", "snapa", "snapd", "grow", "shrink", "checkr",
                     "convert", "wc", "rc", "bread", "bcow"]


@dataclass
class Case:
    id: str
    event: str  # grouping key in the report (the rule's event, or "chain")
    workload: Workload
    rules: str
    group: str  # "matrix" | "chain"
    params: dict = field(default_factory=dict)
    note: str = ""


# Cases blkfault cannot decide from outside QEMU: the request blkdebug fails is
# one whose I/O looks the same for two different things QEMU may be doing, and
# which one only shows in a later request. Each (event, workload) pair is listed
# with the reason; `blkfault events` says the same. These cases still run and
# still count in the raw figures; the harness also reports parity without them.
UNDECIDABLE: dict[tuple[str, str], str] = {}
# (refgrowb: --full only, found by --full --sample 35/40; blkfault never raises the event)
for _w_key in ("w128b", "l1grow", "l2loadb", "l2updb", "refgrowb"):
    UNDECIDABLE[("vmstate_save", _w_key)] = (
        "a vmstate write's first I/O (a refcount block read or an L2 load) looks like "
        "any write's or read's")
for _w_key in ("readb", "l2loadb"):
    UNDECIDABLE[("vmstate_load", _w_key)] = (
        "a vmstate read's first I/O (an L2 load) looks like a vmstate write's")
# (refgrowb: --full only, sample 3/40: the L1 growth before its first vmstate write fails
# the same refcount block read, pread 512 @1024; all 8 variants differ as w128b's do)
for _w_key in ("w128b", "l1grow", "l2loadb", "refgrowb"):
    UNDECIDABLE[("l1_grow_alloc_table", _w_key)] = (
        "the L1 growth's first I/O (a refcount block read) looks like any allocation's")
for _ev in ("cluster_free", "refblock_alloc", "refblock_load"):
    for _w_key in ("discard", "zerou"):
        UNDECIDABLE[(_ev, _w_key)] = (
            "a refcount block read right after an L2 load: a free (discard) or a write "
            "extending a host run; blkfault assumes the write, the discard shows later")
# v2z (compat=0.10: `write -z` over a data cluster deallocates it, then `discard`), found
# by --full --sample 38/40: blkdebug raises cluster_free, refblock_alloc, refblock_load at
# the refcount block read right after the L2 load (tools/events_diff.py), blkfault at the
# discard's fallocate; refblock_load e5 once=on gave the same two outcomes in 4 of 4 runs
# per side. (The command line could tell it, as for qemu-img resize --shrink: a qemu-io
# whose every command only frees.)
for _ev in ("cluster_free", "refblock_alloc", "refblock_load"):
    UNDECIDABLE[(_ev, "v2z")] = UNDECIDABLE[(_ev, "discard")]

for _ev in ("cluster_alloc_bytes", "cluster_alloc"):
    UNDECIDABLE[(_ev, "wc1k")] = (
        "a compressed write's first I/O in a new process (a refcount block read after an "
        "L2 load) looks like any allocating write's; blkfault assumes a plain write")

for _wl in ("cowc", "zstdcow"):  # zlib and zstd (zstdcow: --full, sample 2/40)
    UNDECIDABLE[("cow_read", _wl)] = (
        "the COW read of a compressed cluster is the same pread as a guest read of it; only "
        "the write that follows shows it was a COW (blkfault raises cow_write there)")

# (cluster_alloc on commit098 is decided now: QEMU's block-status check for metadata
# preallocation, which over file-posix reads the top image's refcounts, starts with an
# fstat that blkfault sees: those reads raise nothing.)

# qemu-io -C: QEMU queries block status before a copy-on-read; over file-posix (the
# preload's graph) qcow2 then checks for metadata preallocation and reads the overlay's
# refcount blocks, over blkdebug it cannot (blkdebug reports no allocated file size) and
# reads none. With once=off the refcount block QEMU cached only in the preload's run
# fails its write-back at exit: QEMU behaves differently because blkdebug is in its graph.
for _w_key in ("bcor", "bcorraw"):
    UNDECIDABLE[("read_backing_aio", _w_key)] = (
        "blkdebug in the graph changes QEMU's copy-on-read: without it qcow2 reads its "
        "refcount blocks first (metadata preallocation check), so once=off then also fails "
        "their write-back at exit")

UNDECIDABLE[("read_backing_aio", "bnol2")] = (
    "neither the overlay nor its backing file has an L2 table there: QEMU raises the "
    "event and reads zeros without any I/O, so nothing shows the read")

# Only the immediately=on cases of a pair. blkdebug's `immediately` skips the yield
# before returning the error: a data task of a many-chunk write then fails while qcow2's
# request loop is still starting it, and the loop allocates no further chunk. blkfault
# fails the task's pwrite in QEMU's worker thread, after the yield, as blkdebug does with
# immediately=off (measured on `leak`: blkfault's image with immediately=on is blkdebug's
# with immediately=off, byte for byte; blkdebug's with immediately=on is the rule-less one).
UNDECIDABLE_IMMEDIATELY: dict[tuple[str, str], str] = {
    ("write_aio", "leak"): (
        "immediately=on fails a data task before qcow2's request loop starts the next "
        "chunk, so QEMU allocates no more; a failed pwrite always comes after that yield"),
}
# The same class in the vmstate writes of `l2updb` (`write -b 0 128k` after `write -b 0
# 512`: two data tasks, 64512 bytes @4096 and 66560 @166912) and `refgrowb` (`write -b 0
# 64M`), found by --full --sample 0/40 (Tests/parity/README.md, "Sampling --full"): the
# first request blkdebug fails is the first data task, and with immediately=on blkdebug's
# image differs from its own immediately=off image, which the preload's immediately=on
# image equals byte for byte (errno 5, once on: l2updb's write_aio, refblock_load,
# refblock_alloc and pwritev, 233472-byte image vs blkdebug's 166912; refgrowb's write_aio,
# errno 28, same size, refcounts differ). refgrowb's refblock_load, refblock_alloc and
# pwritev, and l2updb's cluster_alloc, give one image for both settings: not listed.
for _ev in ("write_aio", "refblock_load", "refblock_alloc", "pwritev"):
    UNDECIDABLE_IMMEDIATELY[(_ev, "l2updb")] = UNDECIDABLE_IMMEDIATELY[("write_aio", "leak")]
UNDECIDABLE_IMMEDIATELY[("write_aio", "refgrowb")] = UNDECIDABLE_IMMEDIATELY[("write_aio", "leak")]
# refgrow (`write 0 64M`, 512-byte clusters), found by --full --sample 39/40: once=on fails
# the first data task (32768 bytes @265216); blkdebug's immediately=on image is 298496
# bytes, its immediately=off image 332288 bytes (two more L2 entries and their refcounts),
# and the preload's immediately=on image equals that one byte for byte (errno 5 and 28,
# 3 runs each, same sha256 every run). once=off, and refgrow's refblock_load,
# refblock_alloc, pwritev, cluster_alloc and l2_update with immediately=on, are identical.
UNDECIDABLE_IMMEDIATELY[("write_aio", "refgrow")] = UNDECIDABLE_IMMEDIATELY[("write_aio", "leak")]
# g512 (`write 0 128k`, 512-byte clusters: 4 data tasks of 32 KiB), --full sample 9/40:
# the same two images as refgrow's (rule-less vs blkdebug's own immediately=off image,
# which the preload gives; tools/repeat.py, errno 5, once on, 2 runs per side and setting).
UNDECIDABLE_IMMEDIATELY[("write_aio", "g512")] = UNDECIDABLE_IMMEDIATELY[("write_aio", "leak")]

# Only the once=off cases of a pair. A rule armed while a multi-chunk write allocates a
# refcount block keeps failing every later request, and which of the earlier chunks'
# data tasks got their L2 entries and refcounts written before it depends on when their
# data writes completed: real blkdebug's own result varies with timing. Measured by
# delaying writes of 32 KiB and more by 2-20 ms (an LD_PRELOAD that only sleeps) under
# blkdebug: refgrow's hookup case gave 119, 183 or 247 leaked clusters with the same
# qemu-io output; refblock_alloc_write, reftable_grow, switch_table and write_table on
# refgrow and hookup and refblock_alloc_write on leak changed the same way. once=on
# cases did not change. (refgrowb's first allocation, the L1 growth, has no data in flight.)
UNDECIDABLE_ONCE_OFF: dict[tuple[str, str], str] = {}
for _ev in ("refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
            "refblock_alloc_write_table", "refblock_alloc_switch_table", "reftable_grow"):
    UNDECIDABLE_ONCE_OFF[(_ev, "refgrow")] = (
        "once=off while a multi-chunk write allocates a refcount block: which earlier "
        "chunks' L2 entries reach the disk first depends on when their data writes "
        "complete, so blkdebug's own result varies with timing")
for _ev in ("refblock_alloc_hookup", "refblock_alloc_write"):
    UNDECIDABLE_ONCE_OFF[(_ev, "leak")] = UNDECIDABLE_ONCE_OFF[(_ev, "refgrow")]
# refgrowb (write -b 0 64M, 512-byte clusters): the refcount table's growth. The rule arms
# at the new table and fails every write after it; which chunks' L2 entries and refcounts
# were out by then moves with their data writes. tools/repeat.py --slow, blkdebug alone,
# 6 runs per case: reftable_grow 5 distinct images (e5 once=off) and 5 (e28 imm=on),
# _write_blocks 4, _write_table 6, _switch_table 5 (leaks from cluster 15644 … 16296, same
# qemu-io output); hookup and refblock_alloc_write (the first block, no table growth) 1
# each, reftable_grow once=on 1. Unslowed blkdebug gave one image in 82 runs; the one
# loaded parity run where blkfault differed (session 7) is this class.
for _ev in ("reftable_grow", "refblock_alloc_write_blocks", "refblock_alloc_write_table",
            "refblock_alloc_switch_table"):
    UNDECIDABLE_ONCE_OFF[(_ev, "refgrowb")] = UNDECIDABLE_ONCE_OFF[(_ev, "refgrow")]
# flush_to_os on leak, once=off (4 cases): the rule arms at the first request's
# writethrough flush and fails every cache write-back after it, so the leak is the chunks
# whose L2 entries had not reached the file in an earlier l2_allocate's L2 cache flush:
# which ones depends on when their data writes completed. Measured with
# tools/repeat.py --slow (writes of 32 KiB and more delayed 2-20 ms), real blkdebug
# alone, 25 runs per case: 4-8 distinct images per case (240, 368, 496 or 624 leaked
# clusters, same qemu-io output); another 15 runs at load 5 also gave 752 and 1008.
# Unslowed, blkdebug gave one image (30 of 30 runs per case with two CPU hogs); blkfault
# now gives it in 119 of 120 (the other one is blkdebug's 368-cluster image). once=on
# did not change under --slow (15 of 15, no leak).
UNDECIDABLE_ONCE_OFF[("flush_to_os", "leak")] = (
    "once=off at the request's flush after a write QEMU split into allocating chunks: "
    "which chunks' L2 entries reached the file in an earlier allocation's L2 cache "
    "flush depends on when their data writes completed, so blkdebug's own result "
    "varies with timing")

# iotest 026 events whose blocks blkfault cannot reproduce, with the reason.
UNDECIDABLE_026: dict[str, str] = {
    "l1_grow_alloc_table": UNDECIDABLE[("l1_grow_alloc_table", "l1grow")],
}


def inject_rule(event, errno=5, once="off", imm="off", **extra) -> str:
    lines = ["[inject-error]", f'event = "{event}"', f'errno = "{errno}"',
             f'immediately = "{imm}"', f'once = "{once}"']
    for k, v in extra.items():
        lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def set_state_rule(event, state, new_state) -> str:
    return ("[set-state]\n" f'event = "{event}"\n' f'state = "{state}"\n'
            f'new_state = "{new_state}"\n')


def matrix_case(ev, wk, errno, once, imm) -> Case:
    """One inject-error rule on one workload."""
    return Case(id=f"{ev}-e{errno}-once_{once}-imm_{imm}-{wk}", event=ev, workload=WORKLOADS[wk],
                rules=inject_rule(ev, errno, once, imm), group="matrix",
                params={"errno": errno, "once": once, "immediately": imm})


def chain_case(cid, wk, rules, note) -> Case:
    """A set of rules (set-state chains and the like) on one workload."""
    return Case(id=f"chain-{cid}", event="chain", workload=WORKLOADS[wk],
                rules="\n".join(rules), group="chain", note=note)


# Workloads where blkfault's model is known to fall short (README, "Differences from
# real blkdebug"): qemu-img snapshot -a/-d, check -r and convert (the model misreads
# some of their metadata writes and cache flushes). They break the no-injection separation, so they run
# only with --full or --gaps, and their figures are reported apart.
# (brebase left the gaps: qemu-img rebase reads the old backing file through a
# BlockBackend of its own on the backing node, not through the overlay's node; its reads
# look like a copy-on-read's, and blkfault tells them apart by the command line,
# ProgramCommand.swift.)
GAP_WORKLOADS: set[str] = set()


def selected(gap: bool, full: bool, gaps: bool) -> bool:
    """Whether a case runs in this selection: gap cases only with --gaps or --full,
    --gaps alone runs nothing else."""
    return full or (gap if gaps else not gap)


def add_matrix_cases(cases: list, seen: set, ev, wk, variants) -> None:
    """matrix_case for each (errno, once, immediately) of `variants`, each id once."""
    for errno, once, imm in variants:
        case = matrix_case(ev, wk, errno, once, imm)
        if case.id not in seen:
            seen.add(case.id)
            cases.append(case)


def matrix_cases(full: bool, gaps: bool = False) -> list[Case]:
    cases = []
    seen = set()

    def add(ev, wk, variants):
        if selected(wk in GAP_WORKLOADS, full, gaps):
            add_matrix_cases(cases, seen, ev, wk, variants)

    every = list(product(ERRNOS, ONCE, IMMEDIATELY))
    for ev in MATRIX_EVENTS:
        if ev in DEFAULT_PAIRS:
            for wk in FULL_WORKLOADS if full else DEFAULT_PAIRS[ev]:
                add(ev, wk, every)
        for wk in EXTRA_PAIRS.get(ev, []):
            add(ev, wk, every if full else list(product(ERRNOS, ONCE, ("off",))))
    # Commands and geometries: a few events each by default, every event with --full.
    few = list(product((5,), ONCE, ("off",)))
    for wk in COMMAND_WORKLOADS + list(GEOMETRIES) + list(IOTEST_3B_EVENTS):
        evs = MATRIX_EVENTS if full else (
            GEOMETRY_EVENTS if wk in GEOMETRIES else IOTEST_3B_EVENTS.get(wk, COMMAND_EVENTS))
        for ev in evs:
            add(ev, wk, every if full else few)
    return cases


def chain_cases() -> list[Case]:
    c = []

    def add(cid, wk, rules, note):
        c.append(chain_case(cid, wk, rules, note))

    add("l2_update-sets-2-write_aio-fails", "w128",
        [inject_rule("write_aio", 5, "on", state=2), set_state_rule("l2_update", 1, 2)],
        "set-state l2_update 1->2, inject write_aio in state 2")
    add("l1_update-sets-2-l1_update-fails-2nd", "two_l2",
        [inject_rule("l1_update", 5, "off", state=2), set_state_rule("l1_update", 1, 2)],
        "set-state + inject on the same event: fires on the 2nd L2 allocation only")
    add("l1_update-sets-2-separate-processes", "two_l2_sep",
        [inject_rule("l1_update", 5, "off", state=2), set_state_rule("l1_update", 1, 2)],
        "same rules, two processes: state restarts at 1, nothing fires")
    add("two-set-state-first-wins", "w128",
        [inject_rule("write_aio", 28, "on", state=2),
         set_state_rule("l2_update", 1, 2), set_state_rule("l2_update", 1, 3)],
        "two matching set-state rules: the first defined (->2) wins, write_aio fails")
    add("two-set-state-second-loses", "w128",
        [inject_rule("write_aio", 28, "on", state=3),
         set_state_rule("l2_update", 1, 2), set_state_rule("l2_update", 1, 3)],
        "two matching set-state rules: state 3 is never entered, nothing fires")
    add("three-state-chain", "multi",
        [inject_rule("flush_to_os", 28, "on", state=3),
         set_state_rule("l2_update", 1, 2), set_state_rule("write_aio", 2, 3)],
        "l2_update 1->2, write_aio 2->3, inject flush_to_os in state 3")
    add("flush_to_disk-sets-2-read_aio-fails", "write_write_read",
        [inject_rule("read_aio", 5, "on", state=2), set_state_rule("flush_to_disk", 1, 2)],
        "test-124 style: set-state on flush_to_disk, inject read_aio in state 2")
    add("sector-in-data-write", "w128",
        [inject_rule("write_aio", 5, "on", sector=136)],
        "sector 136 = host byte 69632, inside the guest data write")
    add("sector-outside-data-write", "w128",
        [inject_rule("write_aio", 5, "on", sector=600)],
        "sector 600 = host byte 307200, beyond the data write: no injection")
    add("sector-l1-entry", "w128",
        [inject_rule("l1_update", 5, "on", sector=6)],
        "sector 6 = host byte 3072 = L1 entry 0")
    add("sector-l1-miss", "w128",
        [inject_rule("l1_update", 5, "on", sector=7)],
        "sector 7: the 8-byte L1 write at 3072 does not cover it")
    add("iotype-flush-l1_update", "w128",
        [inject_rule("l1_update", 5, "on", iotype="flush")],
        "iotype=flush: the L1 pwrite succeeds, the following flush fails")
    add("iotype-read-none", "read",
        [inject_rule("none", 5, "off", iotype="read")],
        "event none + iotype read: the qcow2 header read fails at open")
    add("iotype-write-zeroes", "partial",
        [inject_rule("cluster_alloc_space", 5, "on", iotype="write-zeroes")],
        "iotype write-zeroes on the zero-fill of a partial-cluster allocation")
    add("iotype-discard", "discard",
        [inject_rule("cluster_free", 5, "off", iotype="discard")],
        "iotype discard: the discard passthrough fails (qcow2 ignores it)")
    add("errno0-shadows", "w128",
        [inject_rule("write_aio", 0, "on"), inject_rule("write_aio", 5, "on")],
        "errno 0 rule defined first shadows the EIO rule on the same event")
    add("errno0-sector-shadows-part", "w128",
        [inject_rule("write_aio", 0, "on", sector=136), inject_rule("write_aio", 5, "on")],
        "errno 0 with a sector shadows only requests covering that sector")
    add("active-list-replaced", "write_read",
        [inject_rule("l2_alloc_write", 5, "off", iotype="read"),
         inject_rule("write_aio", 0, "off")],
        "a later event with a matching inject rule replaces the active list: read passes")
    add("active-list-retained", "write_read",
        [inject_rule("l2_alloc_write", 5, "off", iotype="read"),
         inject_rule("write_aio", 0, "off", state=2)],
        "an inject rule whose state does not match leaves the active list: read fails")
    add("pwritev-once", "multi",
        [inject_rule("pwritev", 5, "on")],
        "pwritev once: only the very next write into the file fails")
    add("flush_to_disk-once-three-writes", "write3",
        [inject_rule("flush_to_disk", 5, "on")],
        "notes §7.2: blkdebug fails one flush; a shim failing fdatasync latches in file-posix")
    add("negative-errno", "w128",
        [inject_rule("write_aio", "-5", "on")],
        "errno -5: the request is dropped but reported as success")
    return c


def all_cases(full: bool) -> list[Case]:
    return matrix_cases(full) + chain_cases()


# --------------------------------------------------------------------------
# iotest 026 (notes §5.1), for --026
# --------------------------------------------------------------------------

@dataclass
class Case026:
    section: int
    header: str | None  # the "Event: ..." line, None in sections 4/5
    cluster_size: int
    size: str
    rules: str
    pre: list[tuple[str, ...]]  # without blkdebug
    pre_silent: bool  # 026 sends the l2_update pre-write to /dev/null
    runs: list[tuple[str, ...]]  # through the subject
    ignore_leaks: bool


SECTION_TITLES = {
    1: "Errors while writing 128 kB",
    2: "=== Refcount table growth tests ===",
    3: "=== L1 growth tests ===",
    4: "=== Avoid cluster leaks after temporary failure ===",
    5: "=== Avoid freeing preallocated zero clusters on failure ===",
}


def _rule026(event, errno, imm, once, style):
    # 026 writes `once ="$once"` in section 1 and `once = "$once"` later; sections 4/5
    # have no `immediately`.  The parser treats both spellings alike (notes §1.2).
    if style == 1:
        return (f'[inject-error]\nevent = "{event}"\nerrno = "{errno}"\n'
                f'immediately = "{imm}"\nonce ="{once}"\n')
    if style == 2:
        return (f'[inject-error]\nevent = "{event}"\nerrno = "{errno}"\n'
                f'immediately = "{imm}"\nonce = "{once}"\n')
    return f'[inject-error]\nevent = "{event}"\nerrno = "{errno}"\nonce = "{once}"\n'


def cases_026() -> list[Case026]:
    out = []
    s1 = ["l1_update", "l2_load", "l2_update", "l2_alloc_write", "write_aio",
          "refblock_load", "refblock_update_part", "refblock_alloc", "cluster_alloc"]
    for event in s1:
        for errno in ("5", "28"):
            for imm in ("off",):
                for once in ("on", "off"):
                    for vm in ("", "-b"):
                        w = f"write {vm} 0 128k" if vm else "write 0 128k"
                        r = f"read {vm} 0 128k" if vm else "read 0 128k"
                        pre, silent = [], False
                        if event == "l2_update":
                            pre = [(f"write {vm} 0 512" if vm else "write 0 512",)]
                            silent = True
                        runs = [(w,)]
                        if event == "l2_load":
                            runs += [(w,), (r,)]
                        hdr = (f"Event: {event}; errno: {errno}; imm: {imm}; once: {once}; "
                               f"write{(' ' + vm) if vm else ''}")
                        out.append(Case026(1, hdr, 1024, "1G",
                                           _rule026(event, errno, imm, once, 1),
                                           pre, silent, runs, True))
    s2 = ["refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
          "refblock_alloc_write_table", "refblock_alloc_switch_table"]
    for event in s2:
        for errno in ("28",):
            for imm in ("off",):
                for once in ("on", "off"):
                    for vm in ("", "-b"):
                        w = f"write {vm} 0 64M" if vm else "write 0 64M"
                        hdr = (f"Event: {event}; errno: {errno}; imm: {imm}; once: {once}; "
                               f"write{(' ' + vm) if vm else ''}")
                        out.append(Case026(2, hdr, 512, "1G",
                                           _rule026(event, errno, imm, once, 2),
                                           [], False, [(w,)], True))
    s3 = ["l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table"]
    for event in s3:
        for errno in ("5", "28"):
            for imm in ("off",):
                for once in ("on", "off"):
                    hdr = f"Event: {event}; errno: {errno}; imm: {imm}; once: {once}"
                    out.append(Case026(3, hdr, 1024, "1G",
                                       _rule026(event, errno, imm, once, 2),
                                       [], False, [("write -b 0 64k",)], True))
    out.append(Case026(4, None, 1024, "64M", _rule026("write_aio", "5", None, "on", 4),
                       [], False, [("write 0 1M", "write 0 1M")], False))
    out.append(Case026(5, None, 1024, "1024", _rule026("write_aio", "5", None, "on", 4),
                       [("write 0 1024",), ("write -z 0 1024",)], False,
                       [("write 0 1024",)], False))
    return out


# ==========================================================================
# Issue 3, part c: features (zstd, bitmaps, external data file, preallocation,
# images that already hold leaks or corruption), the remaining qemu-io and qemu-img
# commands, and QEMU's other blkdebug iotests that run against a plain image file.
# Appended as its own block; matrix_cases/chain_cases are extended at the end.
# ==========================================================================

from dataclasses import replace as _replace  # noqa: E402

# 64 KiB clusters, 1 GiB, after `write 0 128k`: L2 table at 0x40000, data at 0x50000 and
# 0x60000, refblock at 0x20000 (16-bit entries). A zeroed L2 entry leaks a data cluster;
# a refcount of 0 on a referenced data cluster is a corruption.
_LEAK = ("!patch", "0x40008", "0000000000000000")
_CORRUPT = ("!patch", "0x2000a", "0000")
_TOP = img("create", "-q", "-f", "qcow2", "-b", "t.qcow2", "-F", "qcow2", "TEST_DIR/top.qcow2")
_OTHER = img("create", "-q", "-f", "qcow2", "TEST_DIR/other.qcow2", "1G")
# iotest 020: the matched image becomes the backing file of top.qcow2 through a json:
# name (a blkdebug node over it for the reference), then top is committed into it.
_REBASE_TOP = img("rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b",
                  'json:{"driver":"qcow2","file":@FILE@}', "TEST_DIR/top.qcow2")


def _w3c(key, cs, size, pre, runs, desc, opts="", base=(), hash_files=(), cost=1):
    return _replace(_w(key, cs, size, pre, runs, desc, cost, opts, base),
                    hash_files=tuple(hash_files))


S3C_WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    # -- features
    _w3c("zstdw", 65536, "1G", [], [["write -c 0 64k", "write -c 64k 64k"], ["read 0 128k"]],
         "compression_type=zstd: write -c of two clusters, then read them",
         opts="compression_type=zstd"),
    _w3c("zstdcow", 65536, "1G", [["write -c 0 64k"]], [["write 512 512"]],
         "compression_type=zstd: partial write over a compressed cluster",
         opts="compression_type=zstd"),
    _w3c("bitmapw", 65536, "1G",
         [["write 0 64k"], img("bitmap", "--add", "-f", "qcow2", "IMG", "b1")],
         [["write 64k 64k", "write 1M 4k"]],
         "a stored, enabled bitmap: open marks it in use, writes dirty it, close stores it"),
    _w3c("bitmapcmd", 65536, "1G",
         [["write 0 64k"], img("bitmap", "--add", "-f", "qcow2", "IMG", "b1"),
          ["write 1M 64k"], img("bitmap", "--add", "--disable", "-f", "qcow2", "IMG", "b2")],
         [img("bitmap", "--merge", "b1", "--enable", "-f", "qcow2", "IMG", "b2")],
         "qemu-img bitmap --merge b1 --enable b2 on an image with two stored bitmaps"),
    _w3c("dfile", 65536, "64M", [], [["write 0 128k"], ["read 0 128k"]],
         "external data file (data_file_raw=off): data I/O goes to t.data",
         opts="data_file=t.data,data_file_raw=off", hash_files=["t.data"]),
    _w3c("dfraw", 65536, "64M", [], [["write 0 128k"], ["read 0 128k"]],
         "external data file, data_file_raw=on (the L2 table is preallocated at create)",
         opts="data_file=t.data,data_file_raw=on", hash_files=["t.data"]),
    _w3c("pmeta", 65536, "16M", [], [["write 0 128k", "write 8M 4k"], ["read 0 128k"]],
         "preallocation=metadata: writes and reads into preallocated clusters",
         opts="preallocation=metadata"),
    _w3c("pfalloc", 65536, "16M", [], [["write 0 128k", "write 8M 4k"], ["read 0 128k"]],
         "preallocation=falloc", opts="preallocation=falloc"),
    _w3c("pfull", 65536, "16M", [], [["write 0 128k", "write 8M 4k"], ["read 0 128k"]],
         "preallocation=full", opts="preallocation=full"),
    _w3c("leaked", 65536, "1G", [["write 0 128k"], _LEAK], [["write 0 64k", "write 1M 64k"]],
         "writes into an image that already leaks a cluster (crafted L2 entry)"),
    _w3c("checkleaks", 65536, "1G", [["write 0 128k"], _LEAK],
         [img("check", "-f", "qcow2", "-r", "leaks", "IMG")],
         "qemu-img check -r leaks of an image with a leaked cluster"),
    _w3c("checkall", 65536, "1G", [["write 0 128k"], _CORRUPT],
         [img("check", "-f", "qcow2", "-r", "all", "IMG")],
         "qemu-img check -r all of an image with a referenced cluster of refcount 0"),
    _w3c("corruptw", 65536, "1G", [["write 0 128k"], _CORRUPT], [["write 1M 64k"]],
         "a write into an image with a referenced cluster of refcount 0 (reallocated)"),
    # -- qemu-io commands
    _w3c("vec", 1024, "1G", [], [["writev 0 4k 60k", "writev 128k 1k 1k"], ["readv 0 64k 1k"]],
         "writev and readv (several buffers per request)"),
    _w3c("aio", 1024, "1G", [],
         [["aio_write 0 64k", "aio_flush", "aio_write 64k 64k", "aio_flush"],
          ["aio_read 0 64k", "aio_flush", "aio_read 64k 64k", "aio_flush"]],
         "aio_write + aio_flush twice, then aio_read + aio_flush twice (two requests in "
         "flight complete in either order: their output lines would too)"),
    _w3c("wwrr", 1024, "1G", [], [["write 0 4k", "write 64k 4k", "read 0 4k", "read 64k 4k"]],
         "one process: two writes (the second flushes to disk), two reads (iotest 257 chain)"),
    _w3c("aiowr", 1024, "1G", [],
         [["aio_write 0 64k", "aio_flush", "aio_write 64k 64k", "aio_flush", "aio_read 0 64k",
           "aio_flush"]],
         "one process: aio_write twice, then aio_read (iotest 124 chain)"),
    _w3c("trunc", 65536, "1G", [["write 0 128k"]], [["truncate 2G", "write 1536M 64k"]],
         "qemu-io truncate 1G -> 2G, then a write beyond the old end"),
    _w3c("zeroalloc", 65536, "1G", [], [["write -z 0 128k", "write -z -u 128k 128k"]],
         "write -z and write -z -u on unallocated clusters (iotest 179)"),
    # -- qemu-img commands
    _w3c("amend", 65536, "1G", [["write 0 128k"]],
         [img("amend", "-f", "qcow2", "-o", "compat=0.10", "IMG")],
         "qemu-img amend -o compat=0.10 (downgrade)"),
    _w3c("amendrb", 65536, "1G", [["write 0 128k"]],
         [img("amend", "-f", "qcow2", "-o", "refcount_bits=64", "IMG")],
         "qemu-img amend -o refcount_bits=64 (new refcount structures)"),
    _w3c("rebaseu", 65536, "1G", [], [img("rebase", "-u", "-f", "qcow2", "-b", "", "IMG")],
         "qemu-img rebase -u -b '' on an overlay (header only)", base=[["write -P 1 0 128k"]]),
    _w3c("rebase", 65536, "1G", [["write -P 2 64k 4k"]],
         [img("rebase", "-f", "qcow2", "-b", "", "IMG")],
         "safe qemu-img rebase -b '': the backing data is copied into the overlay",
         base=[["write -P 1 0 128k"]]),
    _w3c("map", 65536, "1G", [["write 0 128k", "write -c 1M 64k"]],
         [img("map", "-f", "qcow2", "--output=json", "IMG")], "qemu-img map"),
    _w3c("measure", 65536, "1G", [["write 0 128k"]],
         [img("measure", "-f", "qcow2", "-O", "qcow2", "IMG")], "qemu-img measure"),
    _w3c("bench", 65536, "1G", [],
         [img("bench", "-w", "-d", "1", "-c", "8", "-s", "4k", "-S", "64k", "-f", "qcow2",
              "IMG")],
         "qemu-img bench -w (depth 1: 8 writes of 4k, each in a new cluster)"),
    _w3c("commit", 65536, "1G", [["write -P 2 64k 64k"]],
         [img("commit", "-f", "qcow2", "-d", "IMG")],
         "qemu-img commit -d of the matched overlay into its backing file",
         base=[["write -P 1 0 128k"]]),
    _w3c("convfrom", 65536, "1G", [["write 0 128k", "write -c 1M 64k"]],
         [img("convert", "-m", "1", "-f", "qcow2", "-O", "qcow2", "IMG", "TEST_DIR/out.qcow2")],
         "qemu-img convert from the matched image"),
    # -- other iotests
    _w3c("it020", 65536, "1G", [["write -P 1 0 128k"], _TOP, ["@top.qcow2", "write -P 5 0 192k"]],
         [_REBASE_TOP, img("commit", "TEST_DIR/top.qcow2")],
         "iotest 020: commit of top.qcow2 into the matched backing image"),
    _w3c("it066", 65536, "1G", [["write 0 128k"], ["write -z 0 128k"]],
         [["write 0 64k", "write 65536 512"]],
         "iotest 066: writes into preallocated zero clusters"),
    _w3c("it074", 65536, "1G", [["write -P 1 0 128k"], _OTHER,
                                ["@other.qcow2", "write -P 1 0 128k"]],
         [img("compare", "-f", "qcow2", "-F", "qcow2", "IMG", "TEST_DIR/other.qcow2")],
         "iotest 074: qemu-img compare of the matched image with a copy"),
    _w3c("it251", 65536, "4M", [["write -P 1 0 256k"]],
         [img("convert", "--salvage", "-m", "1", "-f", "qcow2", "-O", "qcow2", "IMG",
              "TEST_DIR/out.qcow2")],
         "iotest 251: qemu-img convert --salvage from the matched image"),
    _w3c("autoclr", 65536, "1G", [["write -P 1 0 64k"], ("!patch", "88", "8000000000000000")],
         [["read 0 64k"]],
         "an unknown autoclear bit: qcow2_do_open rewrites the header, then only reads"),
]}
WORKLOADS.update(S3C_WORKLOADS)

_DATA = ["l2_load", "l2_update", "l1_update", "refblock_update_part", "cluster_alloc",
         "write_aio", "read_aio", "flush_to_os", "flush_to_disk", "pwritev"]
_META = ["l1_update", "l2_load", "l2_update", "refblock_load", "refblock_update_part",
         "refblock_alloc", "cluster_free", "flush_to_os", "pwritev", "none"]
# Events each workload is crossed with by default (errno 5, once on/off): those where a
# rule injects under blkdebug (measured with all of _DATA/_META), then one where it does
# not, as a no-injection control (the last entry). --full: every event.
S3C_EVENTS: dict[str, list[str]] = {
    "zstdw": ["write_compressed", "cluster_alloc_bytes", "l2_update_compressed",
              "read_compressed", "l2_load"],
    "zstdcow": ["read_compressed", "cow_write", "write_aio", "cluster_alloc", "l2_update"],
    "bitmapw": ["l2_update", "write_aio", "flush_to_os", "pwritev", "cluster_alloc", "cluster_free", "none",
                "refblock_update_part", "l1_update"],
    "bitmapcmd": ["none", "pwritev", "refblock_update_part", "refblock_alloc", "refblock_load",
                  "cluster_alloc", "cluster_free", "flush_to_os",
                  "l2_load"],
    "dfile": ["write_aio", "l2_update", "l1_update", "cluster_alloc", "flush_to_os",
              "refblock_update_part", "read_aio"],
    "dfraw": ["l2_load", "write_aio"],
    "pmeta": ["write_aio", "read_aio", "flush_to_os", "l2_load", "cluster_alloc"],
    "pfalloc": ["write_aio", "read_aio", "flush_to_os", "l2_load", "cluster_alloc"],
    "pfull": ["write_aio", "read_aio", "flush_to_os", "l2_load", "cluster_alloc"],
    "leaked": ["cluster_alloc", "l2_update", "write_aio", "refblock_update_part", "flush_to_os",
               "l1_update"],
    "checkleaks": _META, "checkall": _META,
    "corruptw": ["l2_update", "write_aio", "refblock_update_part", "cluster_alloc", "l2_load", "read_aio",
                 "flush_to_disk"],
    "vec": ["write_aio", "read_aio", "l2_update", "l1_update", "cluster_alloc", "flush_to_os"],
    "aio": ["write_aio", "read_aio", "l2_update", "l1_update", "cluster_alloc", "flush_to_os"],
    "trunc": ["l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
              "l1_update", "write_aio", "l2_update", "l2_load"],
    "zeroalloc": ["l2_update", "l2_alloc_write", "cluster_alloc", "flush_to_os", "cluster_free"],
    "amend": ["l2_load", "flush_to_os", "none", "pwritev", "l1_update"],
    "amendrb": _META + ["refblock_alloc_write", "reftable_grow"],
    "rebaseu": ["none", "pwritev", "flush_to_os", "flush_to_disk"],
    "rebase": ["l2_update", "write_aio", "l2_load", "refblock_update_part", "flush_to_os", "cluster_alloc",
               "flush_to_disk",
               "l1_update"],
    "map": ["l2_load", "none", "read_aio"],
    "measure": ["l2_load", "none", "read_aio"],
    "bench": ["write_aio", "l2_update", "cluster_alloc", "l1_update", "flush_to_os", "l2_load"],
    "commit": ["l2_load", "read_aio", "none", "cluster_free"],
    "convfrom": ["l2_load", "read_aio", "read_compressed", "refblock_load"],
    "it020": ["write_aio", "l2_update", "l2_load", "flush_to_os", "refblock_update_part",
              "cluster_alloc"],
    "it066": ["write_aio", "l2_update", "cluster_alloc", "cluster_alloc_space", "l2_load"],
    "it074": ["read_aio", "l2_load"],
    "it251": ["read_aio", "l2_load"],
    "autoclr": ["flush_to_os", "pwritev", "l2_load", "read_aio", "flush_to_disk"],
}
# iotest 020 and 179 with their own rules: errno 28 once (020), l2_update immediately
# on, once off (179), read_aio once off (074).
S3C_VARIANTS: dict[str, list[tuple]] = {
    "it020": [(28, "on", "off")], "zeroalloc": [(5, "off", "on")],
    "it074": [(5, "off", "off")],
}

# Where blkfault's model still falls short: whole workloads and (workload, event) pairs
# that run only with --gaps (or --full), each with the reason (README, "Differences
# from real blkdebug"). Everything else above is identical to blkdebug.
# (flush_to_os on checkleaks, checkall and amendrb left the gaps: blkdebug fails the
# close's dependency flush once, bdrv_close ignores it and qcow2_close flushes again;
# blkfault performs that flush instead of failing the fdatasync, which file-posix would
# latch, and counts the rule as fired: ImageEngine.retriedFlush.)
# (Storing bitmaps at close left the gaps: BitmapStore.swift models it.)
S3C_GAPS: dict[str, str] = {}
S3C_GAP_PAIRS: dict[tuple[str, str], str] = {
}

# Data-file images: QEMU raises write_aio (and read_aio) on the qcow2 file's node while
# the data goes to the data file, another file; a rule on it fails the next request on
# the qcow2 file. blkfault sees no request where it could raise the event.
for _ev in ("write_aio", "read_aio"):
    UNDECIDABLE[(_ev, "dfile")] = UNDECIDABLE[(_ev, "dfraw")] = (
        "raised on the qcow2 file's node while the data I/O goes to the external data "
        "file; a rule on it fails the next request on the qcow2 file (an L2 update, a "
        "flush), which blkfault cannot tell apart from the data write it never sees")
# qemu-img amend -o refcount_bits: its first refcount-block read (the walk over the old
# refcount table) looks like a write's free-space search, after which QEMU raises
# cluster_alloc; the new refblock's write, much later, is the first sign of the rebuild.
UNDECIDABLE[("cluster_alloc", "amendrb")] = (
    "qemu-img amend -o refcount_bits: the walk's first refcount-block read looks like a "
    "free-space search (blkfault raises cluster_alloc there); blkdebug raises it before the "
    "new refblock's write, the first I/O that tells the rebuild apart")
# qcow2's metadata-preallocation check (an fstat, then refcount-block reads with no
# event) runs only over file-posix: blkfault recognises it by the fstat (it066 and the
# cluster_alloc once=on cases of rebase left the gaps). With once=off on a safe rebase
# the refblock the check cached in the preload's run (and not in blkdebug's) is flushed
# at close while the rule is still active: QEMU behaves differently because blkdebug is
# in its graph.
# corruptw (a write at 1M after an L2 load whose slice ends its allocated entries at
# 0x60000, with 0x70000 free): the refblock read is either the free-space search of a
# new allocation (cluster_alloc first; QEMU hands out the refcount-0 cluster 0x50000) or
# the free check of a run extended past 0x60000 (no cluster_alloc), by a request that
# starts in the last allocated cluster; only the data write that follows shows which.
# blkfault assumes the extension, so with once=off it fails the data write where
# blkdebug fails the read (once=on ends alike).
UNDECIDABLE[("cluster_alloc", "corruptw")] = (
    "a refcount block read right after an L2 load whose last allocated cluster has a free "
    "successor: a new allocation's search or a run extension's check; only the data write "
    "that follows shows which (blkfault assumes the extension)")
UNDECIDABLE[("cluster_alloc", "rebase")] = (
    "over blkdebug QEMU skips the metadata-preallocation check (no allocated size); over "
    "file-posix it reads and caches the refcount block first, so with once=off the close "
    "then flushes caches that blkdebug's run never loaded")
UNDECIDABLE[("l1_grow_alloc_table", "trunc")] = UNDECIDABLE[("l1_grow_alloc_table", "l1grow")]

_matrix_cases_before_3c = matrix_cases
_chain_cases_before_3c = chain_cases


def matrix_cases(full: bool, gaps: bool = False) -> list[Case]:
    cases = _matrix_cases_before_3c(full, gaps)
    seen = {c.id for c in cases}
    for wk, evs in S3C_EVENTS.items():
        variants = (list(product(ERRNOS, ONCE, IMMEDIATELY)) if full
                    else list(product((5,), ONCE, ("off",))) + S3C_VARIANTS.get(wk, []))
        evs = evs + [ev for (ev, w) in S3C_GAP_PAIRS if w == wk]
        for ev in MATRIX_EVENTS if full else evs:
            if selected(wk in S3C_GAPS or (ev, wk) in S3C_GAP_PAIRS, full, gaps):
                add_matrix_cases(cases, seen, ev, wk, variants)
    return cases


def s3c_chain_cases() -> list[Case]:
    c = []

    def add(cid, wk, rules, note):
        c.append(chain_case(cid, wk, rules, note))

    add("it066-write_aio-sets-2-write_aio-fails", "it066",
        [inject_rule("write_aio", 5, "off", state=2), set_state_rule("write_aio", 1, 2)],
        "iotest 066: a write into a preallocated zero cluster is a single write_aio")
    add("it257-flush-read-read", "wwrr",
        [inject_rule("read_aio", 5, "on", state=3), set_state_rule("flush_to_disk", 1, 2),
         set_state_rule("read_aio", 2, 3)],
        "iotests 124/257: flush_to_disk 1->2, read_aio 2->3, inject read_aio in state 3")
    add("it124-flush-read", "aiowr",
        [inject_rule("read_aio", 5, "on", state=2), set_state_rule("flush_to_disk", 1, 2)],
        "iotest 124: set-state on flush_to_disk, inject read_aio in state 2")
    add("it136-read-sector-in", "read",
        [inject_rule("read_aio", 5, "on", sector=(69632 >> 9) + 8)],
        "iotest 136 style: read_aio at one sector of the data (host 69632 on)")
    add("it136-read-sector-out", "read",
        [inject_rule("read_aio", 5, "on", sector=(69632 + (128 << 10)) >> 9)],
        "iotest 136 style: read_aio at the sector right after the data: no injection")
    add("it136-write-sector-in", "vec",
        [inject_rule("write_aio", 5, "off", sector=(4 << 10) // 512 + 140)],
        "iotest 136 style: write_aio at one sector of a writev's data")
    add("it251-salvage-read-sector", "it251",
        [inject_rule("none", 5, "off", iotype="read", sector=(0x60000 >> 9) + 1)],
        "iotest 251: event none, iotype read at one sector; convert --salvage goes on")
    add("it179-l2_update-imm", "zeroalloc",
        [inject_rule("l2_update", 5, "off", "on")],
        "iotest 179: write -z [-u] on unallocated clusters updates no L2 table")
    add("it244-none-flush", "dfile",
        [inject_rule("none", 5, "off", iotype="flush")],
        "iotest 244 style: every flush of the qcow2 file fails (data file on its own)")
    return c


def s6_chain_cases() -> list[Case]:
    # dnone (writeback): when an allocation reaches the end of a refcount block with L2
    # entries dirty, alloc_refcount_block's L2 cache flush writes the dirty tables back
    # (l2_update), which blkfault took for l2_allocate's and counted an l2_alloc_write
    # too many (blkdebug_events.py: 4 before the first refblock_alloc_write, not 5).
    rules = [inject_rule("refblock_alloc_write", 5, "on", state=5)]
    rules += [set_state_rule("l2_alloc_write", n, n + 1) for n in range(1, 6)]
    return [chain_case("dnone-l2_alloc_write-counts-4-before-refblock_alloc_write", "dnone", rules,
                       "set-state l2_alloc_write 1->2->...->6, inject refblock_alloc_write in state 5")]


def chain_cases() -> list[Case]:
    return _chain_cases_before_3c() + s3c_chain_cases() + s6_chain_cases()


# ==========================================================================
# Issue 3, audit (s4-3c): holes found by checking the issue's space item by item
# against the default set (Tests/parity/README.md, "Coverage of issue 3").
# - every event with one case using the `iotype` filter and one using `sector`;
# - refcount-table growth at a cost of milliseconds (512-byte clusters with 64-bit
#   refcounts: one refblock covers 32 KiB, the first table 2 MiB), so that the
#   refblock_alloc_* / reftable_grow events run with errno 5/28 and once on/off
#   without the seconds-long 64 MiB writes of iotest 026 §2;
# - the refcount widths no workload had (2, 4, 8, 32 bits);
# - O_DIRECT (`qemu-io -t none`) with rules on pwritev_rmw_*: file-posix pads the
#   unaligned 8-byte refcount-table write with a read-modify-write, below blkdebug,
#   so blkdebug never raises them (nor does blkfault);
# - a command with two matched images (`MATCH:` in a qemu-img argument: a blkdebug node
#   on that image too for the reference, BLKFAULT_IMAGE names both for the preload).
# ==========================================================================

# Events QEMU 7.2 defines but never raises on blkdebug as an image's file node
# (refblock_update: no caller; pwritev_rmw_*: only on a node whose request alignment
# is above 1, which blkdebug has only with its `align` option). Crossed with the
# filters on the workloads below as no-injection controls.
NEVER_RAISED = ["refblock_update", "pwritev_rmw_head", "pwritev_rmw_after_head",
                "pwritev_rmw_tail", "pwritev_rmw_after_tail"]
MATRIX_EVENTS += [e for e in NEVER_RAISED if e not in MATRIX_EVENTS]

_GEOM2 = {"rb2": "refcount_bits=2", "rb4": "refcount_bits=4", "rb8": "refcount_bits=8",
          "rb32": "refcount_bits=32"}
AUDIT_WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    _w("rtgrow64", 512, "64M", [["write 0 1792k"]], [["write 2M 256k"]],
       "512-byte clusters, refcount_bits=64: after write 0 1792k, write 2M 256k hooks up "
       "five refblocks and grows the refcount table (refblock_alloc_*, reftable_grow, the "
       "old table's cluster_free)",
       opts="refcount_bits=64"),
    _w("dnone", 1024, "1G", [], [["-tnone", "write 1536 1k", "write 0 1M", "read 100 1000"]],
       "qemu-io -t none (O_DIRECT): unaligned requests padded by file-posix's "
       "read-modify-write, below blkdebug (pwritev_rmw_* never raised)"),
    _w("convboth", 1024, "1G",
       [img("create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", "TEST_DIR/src.qcow2",
            "1G"), ["@src.qcow2", "write -P 3 0 128k"]],
       [img("convert", "-n", "-f", "qcow2", "-O", "qcow2", "MATCH:TEST_DIR/src.qcow2", "IMG")],
       "qemu-img convert -n with both images matched: rules per image (reads of the "
       "source, writes of the target)"),
]}
AUDIT_WORKLOADS["xl2p"] = _w(
    "xl2p", 65536, "1G", [["write 0 64k"]],
    [["write 70k 2k", "write 8k 4k", "write -z 16k 4k", "write -z -u 24k 8k"], ["read 0 128k"]],
    "extended_l2: a partial write into a new cluster (one subcluster allocated, no COW), "
    "a write into an unallocated subcluster of an allocated cluster, write -z [-u] of "
    "subclusters; then a read of both clusters", opts="extended_l2=on")
# lazy_refcounts with the dirty bit set: what a process killed after `write 0 128k`
# leaves (byte for byte the image of qemu-io's `abort` there, without a core dump):
# the data clusters' refcounts never written and incompatible feature bit 0 set. The
# next read-write open repairs the refcounts before anything else.
AUDIT_WORKLOADS["lazydirty"] = _w(
    "lazydirty", 65536, "1G", [["write 0 128k"], ("!patch", "0x2000a", "00000000"),
                               ("!patch", "0x4f", "01")],
    [["write 1M 64k"], ["read 0 128k"]],
    "lazy_refcounts, dirty bit set with refcounts not written: the open repairs them, "
    "then a write; a read in a new process", opts="lazy_refcounts=on")
# compat=0.10 has no zero flag: write -z writes zeroes as data or deallocates.
AUDIT_WORKLOADS["v2z"] = _w(
    "v2z", 65536, "1G", [["write 0 128k"]], [["write -z 0 64k", "write -z 128k 64k"],
                                            ["discard 64k 64k"]],
    "compat=0.10: write -z over data and over unallocated clusters, then a discard",
    opts="compat=0.10")
AUDIT_WORKLOADS["convboth"] = replace(AUDIT_WORKLOADS["convboth"], hash_files=("src.qcow2",))
for _k, _o in _GEOM2.items():
    AUDIT_WORKLOADS[_k] = _w(_k, 65536, "1G", [], [["write 0 128k"], ["read 0 128k"]],
                             f"cluster_size=65536,{_o}: write 0 128k, then read 0 128k",
                             opts=_o)
WORKLOADS.update(AUDIT_WORKLOADS)
GEOMETRIES.update({k: (65536, o) for k, o in _GEOM2.items()})

# (event, workload) pairs run with errno 5, once on/off (immediately off): rtgrow64's
# traced runs cost about 2 s a case on 2 busy vCPUs.
AUDIT_PAIRS: dict[str, list[str]] = {
    "refblock_alloc_hookup": ["rtgrow64"], "refblock_alloc_write": ["rtgrow64"],
    "refblock_alloc_write_blocks": ["rtgrow64"], "refblock_alloc_write_table": ["rtgrow64"],
    "refblock_alloc_switch_table": ["rtgrow64"], "reftable_grow": ["rtgrow64"],
    "cluster_free": ["rtgrow64"],
}
# convboth: errno 5, once on/off (the four refcount widths are GEOMETRIES: GEOMETRY_EVENTS).
AUDIT_EVENTS: dict[str, list[str]] = {
    "convboth": ["read_aio", "l2_load", "write_aio", "l2_update", "cluster_alloc", "none"],
    # qemu-img resize 1G -> 2G had only COMMAND_EVENTS: its L1 growth events too.
    "grow": ["l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
             "cluster_free"],
    "lazydirty": _META + ["write_aio", "cluster_alloc", "reftable_load"],
    # O_DIRECT: the refcount-table hookup reaches the file as a padded read-modify-write;
    # `none` meets file-posix's alignment probe first (AlignmentProbe.swift).
    "dnone": ["refblock_alloc_hookup", "refblock_alloc_write", "l1_update", "l2_update",
              "cluster_alloc", "write_aio", "read_aio", "flush_to_os", "none"],
    # lazy had only the geometry events: the dirty bit's own write and flush.
    "lazy": ["flush_to_os", "flush_to_disk", "pwritev", "none"],
    "v2z": ["l2_update", "l2_load", "write_aio", "pwritev_zero", "cluster_free",
            "refblock_update_part", "flush_to_os", "cluster_alloc"],
    "xl2p": ["l2_update", "l2_load", "cluster_alloc", "cluster_alloc_space", "write_aio",
             "pwritev_zero", "read_aio", "flush_to_os", "cluster_free"],
}
# qemu-img resize: the L1 growth's first I/O is the refcount-block read of the new
# table's allocation, the same read as any allocation's first (checked with
# tools/blkdebug_events.py: `truncate 2G` in qemu-io and `qemu-img resize` both read
# the refblock at 131072 right after the refcount table, as a write's cluster_alloc does).
UNDECIDABLE[("l1_grow_alloc_table", "grow")] = UNDECIDABLE[("l1_grow_alloc_table", "l1grow")]

# The filter cases: per event, the workload, the iotype and the sector (512-byte units
# of the blkdebug node's requests, i.e. of the image file). Chosen from the first
# request real blkdebug fails with the bare rule (the harness's `first_failure` of
# the once=on case, errno 5): the iotype is that request's type (once off: every later
# request of that type fails too), the sector one inside that request (once on).
# Never-raised events get both filters on the workloads where their I/O would be.
# A fourth element is another workload for the sector case. A sector rule matches a
# request only if the sector's first byte is inside it (8 or 12 bytes at 520 or 36 cover
# no sector's start), and stays active until one does: such picks name a later request.
FILTER_PICKS: dict[str, tuple] = {
    # 1 KiB clusters after `write 0 128k` (w128, read): header 0, reftable 1024, refblock
    # 2048 (sector 4), L1 3072 (6), L2 68608 (134), data from 69632 (136).
    "l1_update": ("w128", "write", 6),
    "l2_load": ("read", "read", 134),
    "l2_update": ("l2upd", "write", 134),
    "l2_alloc_write": ("w128", "write", 134),
    "write_aio": ("w128", "write", 264),  # sector 136 is chain-sector-in-data-write
    "read_aio": ("read", "read", 200),
    "refblock_load": ("w128", "write", 4),
    "refblock_update_part": ("w128", "write", 4),
    "refblock_alloc": ("w128", "write", 5),
    "reftable_load": ("read", "read", 2),
    "cluster_alloc": ("w128", "read", 4),
    "pwritev": ("w128", "write", 4),
    "pwritev_done": ("w128", "flush", 4),  # a flush covers no sector: the next write of 4
    "none": ("multi", "write", 6),
    # rtgrow64 (512-byte clusters, refcount_bits=64): the first hookup at 984, the first
    # new refblock at 1910784 (sector 3732), the new refcount area from 2129920 (4160),
    # the new table at 2130944 (4162), the header's 12 bytes at 48, then the old table's
    # free reads the refblock at 1024 (2).
    "refblock_alloc_hookup": ("rtgrow64", "write", 4160),  # 520: no sector starts in it
    "refblock_alloc_write": ("leak", "write", 1046),  # leak: the new refblock at 535552
    "refblock_alloc_write_blocks": ("rtgrow64", "write", 4160),
    "refblock_alloc_write_table": ("rtgrow64", "write", 4162),
    "refblock_alloc_switch_table": ("rtgrow64", "write", 2),  # the old table's free
    "reftable_grow": ("rtgrow64", "write", 4160),
    # write -b 0 64k (1 KiB clusters): the new L1 table written at 68608 (98304 bytes),
    # the 12-byte header update at 36, the old L1 table's refcount at 2048.
    "l1_grow_alloc_table": ("l1grow", "read", 4),
    "l1_grow_write_table": ("l1grow", "write", 200),
    "l1_grow_activate_table": ("l1grow", "write", 4),  # 36: no sector starts in it
    "cluster_free": ("l1grow", "write", 4),
    "vmstate_save": ("w128b", "read", 4),
    "vmstate_load": ("readb", "read", 6),
    "flush_to_os": ("multi", "write", 4),
    "flush_to_disk": ("multi", "flush", 137, "wwrr"),  # wwrr: the read at 69632 follows
    "pwritev_zero": ("partial", "write", 138),
    "cluster_alloc_space": ("partial", "write-zeroes", 136),
    # 64 KiB clusters: compressed data at 327680 (sector 640), L1 at 196608 (384),
    # the shrink's L2 table at 458752 (896), the refcount table at 65536 (128),
    # the first refcount-block read of an allocation at 131072 (256), the merged COW
    # write over backing data at 328704 (642).
    "write_compressed": ("wc", "write", 640),
    "cluster_alloc_bytes": ("wc", "write", 640),
    "l2_update_compressed": ("wc", "write", 640),
    "read_compressed": ("rc", "read", 640),
    "l1_shrink_write_table": ("shrink", "write-zeroes", 128),  # 196616: none starts in it
    "l1_shrink_free_l2_clusters": ("shrink", "write", 128),
    "read_backing_aio": ("bread", "read", 256),
    "cow_read": ("bcow", "write", 642),
    "cow_write": ("bcow", "write", 642),
    "l2_alloc_cow_read": ("snapw", "read", 134),
    # qemu-img commit empties the top image: zeroes from 65536 (sector 128), the header's
    # 20 bytes at 40.
    "empty_image_prepare": ("commit098", "write-zeroes", 200),
    "reftable_update": ("commit098", "write", 0),
    # Never raised on blkdebug as the image's file node: no-injection controls on the
    # I/O they would precede (dnone: file-posix's read-modify-write of the 8-byte
    # refcount-table hookup at 1032 reads and writes sector 2 under O_DIRECT).
    "cor_write": ("bcor", "write", 1280),
    "refblock_update": ("w128", "write", 4),
    "pwritev_rmw_head": ("dnone", "read", 2),
    "pwritev_rmw_after_head": ("dnone", "write", 2),
    "pwritev_rmw_tail": ("dnone", "read", 2),
    "pwritev_rmw_after_tail": ("dnone", "write", 2),
}


def filter_case(ev, wk, kind, value, once) -> Case:
    """One inject-error rule on one event with the iotype or the sector filter."""
    extra = {kind: value}
    return Case(id=f"{ev}-{'iot_' + value if kind == 'iotype' else f'sec_{value}'}"
                   f"-once_{once}-{wk}", event=ev, workload=WORKLOADS[wk],
                rules=inject_rule(ev, 5, once, "off", **extra), group="filter",
                params={"errno": 5, "once": once, "immediately": "off", kind: value})


def filter_cases() -> list[Case]:
    out = []
    for ev, (wk, iot, sector, *swk) in FILTER_PICKS.items():
        out.append(filter_case(ev, wk, "iotype", iot, "off"))
        out.append(filter_case(ev, swk[0] if swk else wk, "sector", sector, "on"))
    return out


_matrix_cases_before_audit = matrix_cases


# Found by the audit and left to the refcount-block model (Qcow2Classifier's refcount
# branch, another helper's work at the time): behind --gaps, with the reason.
# (refblock_alloc_write on rtgrow64, once off, was here: fixed with refgrowb's cause, the
# refcount-cache flush that writes the allocation's old block first, RefblockAllocation.)
AUDIT_GAP_PAIRS: dict[tuple[str, str], str] = {}
# (flush_to_os on dnone was here, behind --gaps: its once=off case differed in 1 of 14
# runs. Session 5 found blkdebug's own result varying there (UNDECIDABLE_ONCE_OFF, below),
# and fixed what the events showed: qemu-io -t none writes back (ProgramCommand), so the
# close's flush raises flush_to_disk; a stale l2_allocate flag after a late data write no
# longer hides the close's L2 write-backs. Both cases are in the default set now.)
# qemu-io -t none, once=off: the rule arms at the close's flush and fails the write-backs,
# so the leak is the chunks whose L2 entries an allocation's L2 cache flush had not
# written, as for flush_to_os on leak. tools/repeat.py --slow, blkdebug alone, 25 runs: 7
# distinct images (leaks from cluster 71, 326, 455, 585 or 714 on); unslowed 20/20 one
# image, blkfault the same 20/20. once=on: 25/25 one image under --slow.
UNDECIDABLE_ONCE_OFF[("flush_to_os", "dnone")] = UNDECIDABLE_ONCE_OFF[("flush_to_os", "leak")]
# compat=0.10 `write -z` over data deallocates the clusters: the same refcount-block
# read right after an L2 load as a discard's (above: discard, zerou).
UNDECIDABLE[("cluster_free", "v2z")] = UNDECIDABLE[("cluster_free", "discard")]


def matrix_cases(full: bool, gaps: bool = False) -> list[Case]:
    cases = _matrix_cases_before_audit(full, gaps)
    seen = {c.id for c in cases}

    def add(ev, wk, variants):
        if selected((ev, wk) in AUDIT_GAP_PAIRS, full, gaps):
            add_matrix_cases(cases, seen, ev, wk, variants)

    every = list(product(ERRNOS, ONCE, IMMEDIATELY))
    for ev, wks in AUDIT_PAIRS.items():
        for wk in wks:
            add(ev, wk, every if full else list(product((5,), ONCE, ("off",))))
    for wk, evs in AUDIT_EVENTS.items():
        for ev in MATRIX_EVENTS if full else evs:
            add(ev, wk, every if full else list(product((5,), ONCE, ("off",))))
    for case in [] if gaps and not full else filter_cases():
        if case.id not in seen:
            seen.add(case.id)
            cases.append(case)
    return cases


# ==========================================================================
# Session 8 (s8-3b): qemu-img commit and rebase with the overlay AND its backing file
# matched ("rules per matched image, as with a blkdebug node on each"). `IMG+BASE` in a
# qemu-img command (parity.py, both_json) is, for the reference, a json: filename with a
# blkdebug node under the overlay's qcow2 node and one under its backing qcow2 node (that
# one names no image: qcow2 opens the header's backing file name through it); for the
# preload the plain image, with TEST_DIR/base.qcow2 added to BLKFAULT_IMAGE. Each node
# has its own rule state, as each of blkfault's per-image engines has (the chains below).
# ==========================================================================

_BOTH_BASE = [["write -P 1 0 128k"]]
S8_BOTH_WORKLOADS: dict[str, Workload] = {w.key: _replace(w, hash_files=("base.qcow2",)) for w in [
    # The overlay's data over an allocated base cluster (64k) and on into one the base
    # does not have (128k: the commit allocates in the base; the base's data at 1M sits
    # right after its 64k cluster in the file, so that is a new allocation, cluster_alloc,
    # not a run extended in place). One run of clusters: the
    # commit's mirror job copies it with one read and one write. (Two runs apart are two
    # copy operations in flight, and with read_aio once=on whether the second starts
    # before the first one's failure is seen depends on the worker thread's timing in
    # blkfault's run: Tests/parity/README.md, session 8.)
    _w("commitboth", 65536, "1G", [["write -P 2 64k 68k"]],
       [img("commit", "-f", "qcow2", "-d", "IMG+BASE")],
       "qemu-img commit -d with the overlay and its backing file both matched (reads of "
       "the overlay, L2 loads and writes of the base)",
       base=[["write -P 1 0 128k", "write -P 1 1M 64k"]]),
    _w("rebaseboth", 65536, "1G", [["write -P 2 64k 4k"]],
       [img("rebase", "-f", "qcow2", "-b", "", "IMG+BASE")],
       "safe qemu-img rebase -b '' with the overlay and its old backing file both matched "
       "(reads of the base, writes of the overlay)", base=_BOTH_BASE),
]}
WORKLOADS.update(S8_BOTH_WORKLOADS)
# errno 5, once on/off (every event with --full).
S8_BOTH_EVENTS: dict[str, list[str]] = {
    "commitboth": ["l2_load", "read_aio", "write_aio", "l2_update", "cluster_alloc", "none"],
    "rebaseboth": ["l2_load", "read_aio", "write_aio", "l2_update", "cluster_alloc", "none"],
}


# The same overlay and safe rebase as `rebase` (one matched image), whose cluster_alloc
# is listed above: with once=off the close flushes a refcount block only the preload's
# run cached (qcow2's metadata-preallocation check runs over file-posix, not over
# blkdebug), and fails it: "Failed to flush the L2 table cache / refcount block cache".
UNDECIDABLE_ONCE_OFF[("cluster_alloc", "rebaseboth")] = UNDECIDABLE[("cluster_alloc", "rebase")]

# Found by `--full --case commitboth` (s8-3b). The commit writes the base's 64k..192k as
# two data tasks of one request, the cluster rewritten in place (host 393216) and the new
# one; submitted back to back, with no yield between them:
# - immediately=on fails the first task before the second starts; in blkfault's run the
#   second has started (its image is blkdebug's immediately=off one, byte for byte): the
#   many-chunk class of `leak`;
for _ev in ("write_aio", "pwritev"):
    UNDECIDABLE_IMMEDIATELY[(_ev, "commitboth")] = UNDECIDABLE_IMMEDIATELY[("write_aio", "leak")]
# - blkdebug checks the second task before the first one's completion raises
#   pwritev_done, so a rule on it fails the request after both; blkfault holds a guest
#   data write's pwritev_done only in writethrough mode (HeldDoneTests), and qemu-img
#   commit writes the base in writeback mode, where the next data write may as well be a
#   later request's (which blkdebug would fail): it fails the second task.
UNDECIDABLE[("pwritev_done", "commitboth")] = (
    "writeback mode (qemu-img commit's base): a data write right after another with no "
    "flush between is either the same request's next task (blkdebug checks it before the "
    "first one's pwritev_done) or a later request (checked after); blkfault cannot tell")


def armed_in_state_2(name: str, workload: str, inject: str, arming: str, desc: str) -> Case:
    """A chain: set-state ARMING 1->2, inject INJECT (errno 5, once off) in state 2."""
    return chain_case(name, workload,
                      [inject_rule(inject, 5, "off", state=2), set_state_rule(arming, 1, 2)], desc)


# Per-node state: commit reads only the overlay and writes only the base, so a state set
# by the overlay's read_aio never reaches the base's write_aio (no injection), while the
# base's own l2_load before its write does (injection). (name, workload, inject, arming,
# desc); later blocks append theirs (rebasenewboth, session 9).
PER_NODE_CHAINS = [
    ("commitboth-state-per-node", "commitboth", "write_aio", "read_aio",
     "set-state read_aio 1->2 (the overlay's reads), inject write_aio in state 2 (the base's "
     "writes): per-node state, no injection"),
    ("commitboth-base-l2_load-sets-2", "commitboth", "write_aio", "l2_load",
     "set-state l2_load 1->2, inject write_aio in state 2: the base loads its own L2 table "
     "before its writes"),
]


def s8_both_chain_cases() -> list[Case]:
    return [armed_in_state_2(*c) for c in PER_NODE_CHAINS]


def with_workload_events(before, events: dict[str, list[str]], own_only: tuple[str, ...] = ()):
    """matrix_cases extended by EVENTS' workloads: their events with errno 5, once on and
    off in the default set; with --full every event (a workload in OWN_ONLY: its own
    events) with every errno, once and immediately."""
    def matrix_cases(full: bool, gaps: bool = False) -> list[Case]:
        cases = before(full, gaps)
        if gaps and not full:
            return cases
        seen = {c.id for c in cases}
        every = list(product(ERRNOS, ONCE, IMMEDIATELY))
        for wk, evs in events.items():
            for ev in MATRIX_EVENTS if full and wk not in own_only else evs:
                add_matrix_cases(cases, seen, ev, wk, every if full else list(product((5,), ONCE, ("off",))))
        return cases
    return matrix_cases


matrix_cases = with_workload_events(matrix_cases, S8_BOTH_EVENTS)
_chain_cases_before_s8both = chain_cases


def chain_cases() -> list[Case]:
    return _chain_cases_before_s8both() + s8_both_chain_cases()


# ==========================================================================
# Session 8 (s8-3c): counting chains over `write 0 1M` (leak's first write, 1 KiB
# clusters: 8 chunks of 128 KiB). blkdebug raises chunk k's data allocation events
# with chunk k+1's table allocation, before the refcount write-back that starts its
# l2_allocate; counting them to the Nth occurrence tells where each lands (odd N:
# a data allocation's, even N: a table's; README "The `write 0 1M` event order").
# ==========================================================================

def counting_chain(event: str, n: int) -> list[str]:
    """set-state EVENT k->k+1 for k < n, inject EVENT in state n once: the nth EVENT fails."""
    return ([inject_rule(event, 5, "on", state=n)]
            + [set_state_rule(event, k, k + 1) for k in range(1, n)])


def s8_count_chain_cases() -> list[Case]:
    return [chain_case(f"leak-{ev}-counts-to-{n}", "leak", counting_chain(ev, n),
                       f"set-state {ev} 1->...->{n}, inject {ev} in state {n} once=on: "
                       f"the {n}th {ev} of write 0 1M (chunk order)")
            for ev in ("cluster_alloc", "refblock_alloc") for n in (3, 4, 5)]


_chain_cases_before_s8count = chain_cases


def chain_cases() -> list[Case]:
    return _chain_cases_before_s8count() + s8_count_chain_cases()


# ==========================================================================
# Session 9 (s9-3a): qemu-img commit with two copy operations in flight. The overlay's
# data lies in two runs apart (64k and 1M), so the commit's mirror job copies them as two
# operations: the first iteration's read is in flight when the second iteration starts.
# commit2 matches the overlay only (the base's bytes are compared too: the second copy
# lands there), commitboth2 the overlay and its backing file.
# ==========================================================================

_TWO_RUNS = [["write -P 2 64k 64k", "write -P 2 1M 4k"]]
S9_TWO_COPY_WORKLOADS: dict[str, Workload] = {w.key: _replace(w, hash_files=("base.qcow2",)) for w in [
    _w("commit2", 65536, "1G", _TWO_RUNS, [img("commit", "-f", "qcow2", "-d", "IMG")],
       "qemu-img commit -d of an overlay whose data lies in two runs (two copy operations "
       "of the mirror job in flight)", base=_BOTH_BASE),
    _w("commitboth2", 65536, "1G", _TWO_RUNS, [img("commit", "-f", "qcow2", "-d", "IMG+BASE")],
       "qemu-img commit -d, two copy operations in flight, the overlay and its backing file "
       "both matched", base=_BOTH_BASE),
    # Three runs: blkdebug lets the second copy start but not the third (README there).
    _w("commit3", 65536, "1G", [["write -P 2 64k 64k", "write -P 2 1M 4k", "write -P 2 2M 4k"]],
       [img("commit", "-f", "qcow2", "-d", "IMG")],
       "qemu-img commit -d of an overlay whose data lies in three runs (copy operations "
       "started one event-loop pass apart)", base=_BOTH_BASE),
]}
WORKLOADS.update(S9_TWO_COPY_WORKLOADS)
# errno 5, once on/off (every event with --full).
S9_TWO_COPY_EVENTS: dict[str, list[str]] = {
    "commit2": ["l2_load", "read_aio", "none", "cluster_free"],
    "commitboth2": ["l2_load", "read_aio", "write_aio", "l2_update", "cluster_alloc", "none"],
    "commit3": ["read_aio", "none"],
}

matrix_cases = with_workload_events(matrix_cases, S9_TWO_COPY_EVENTS, own_only=("commit3",))


# Only the once=on cases of a pair (parity.py looks this up like the two lists above).
# Tests/parity/README.md, "Session 9 (s9-3a)": the commit's mirror job issues its first
# copy from the thread pool's completion bottom half and its second from a timer due at
# once, in the same event-loop pass. blkdebug (immediately=off) hands the first read's
# error back from a bottom half of the next pass, so the second copy always starts (and
# a third would not: measured on three runs). blkfault fails that read's pread in QEMU's
# worker thread; when the worker returns before the completion bottom half rescans its
# requests, the job sees the error first and starts no second copy (5 of 10 runs). No
# system call marks the loop's next pass (aio_poll skips ppoll while a timer is due):
# holding the error until the loop next waits gives blkdebug's two copies on two runs
# but three where blkdebug gives two (tools/holdfail.c).
UNDECIDABLE_ONCE_ON: dict[tuple[str, str], str] = {}
UNDECIDABLE_ONCE_ON[("read_aio", "commit2")] = (
    "two copy operations in flight: blkdebug returns the first read's error one QEMU "
    "event-loop pass later, after the job's timer started the next copy; blkfault's "
    "failed read returns from a worker thread, before or after that timer, and no "
    "system call marks the loop's next pass")
UNDECIDABLE_ONCE_ON[("read_aio", "commitboth2")] = UNDECIDABLE_ONCE_ON[("read_aio", "commit2")]
UNDECIDABLE_ONCE_ON[("read_aio", "commit3")] = UNDECIDABLE_ONCE_ON[("read_aio", "commit2")]
# The two copies' reads finish in QEMU's worker threads in either order, so which
# copy's base write comes first (write_aio once=on fails it) and whether the in-place
# write of 64k precedes the new cluster's allocation at 1M (cluster_alloc once=off fails
# everything on the base after it) vary under real blkdebug too (tools/repeat.py).
UNDECIDABLE_ONCE_ON[("write_aio", "commitboth2")] = (
    "two copy operations in flight: which copy's write to the base comes first depends "
    "on which read finished first in QEMU's worker threads, so blkdebug's own result "
    "varies with timing")
# The base's write made of two data tasks (in place and a new cluster), once=on: qcow2
# issues both at once; blkdebug fails the first issued, blkfault the first whose pwrite
# reaches libc in QEMU's worker threads, nearly always the same one (end of session 9:
# write_aio differed in 1 of 4 full default runs, base.qcow2's bytes only, then 22 of
# 22 runs of tools/repeat.py alike; pwritev once in s9-3d's --full run, then 14 of 14).
_TWO_TASKS_ORDER = (
    "the base's write is two data tasks issued at once (in place and a new cluster): "
    "blkdebug fails the first issued, a preload the first whose pwrite reaches libc in "
    "QEMU's worker threads, which is nearly always but not always the same task; the "
    "issue order is not visible from outside")
for _wk in ("commitboth", "cpcommit"):
    for _ev in ("write_aio", "pwritev"):
        UNDECIDABLE_ONCE_ON[(_ev, _wk)] = _TWO_TASKS_ORDER
# (--full only; found in slice 16/40 at the end of session 9: blkdebug gave two outcomes
# in 8 runs of tools/repeat.py, 7 and 1; blkfault one, the 7 runs' one.)
UNDECIDABLE_ONCE_ON[("pwritev_done", "commitboth2")] = (
    "two copy operations in flight: which of the base's data writes a once rule on "
    "pwritev_done fails depends on which copy's read finished first in QEMU's worker "
    "threads, so blkdebug's own result varies with timing")
UNDECIDABLE_ONCE_OFF[("cluster_alloc", "commitboth2")] = (
    "two copy operations in flight: whether the in-place write comes before the new "
    "cluster's allocation, after which the rule fails every write of the base, depends "
    "on which read finished first in QEMU's worker threads, so blkdebug's own result "
    "varies with timing")


# ==========================================================================
# Session 9 (s9-3b): image files with holes in their data clusters (copied by `cp`,
# or preallocation=metadata). Over file-posix qcow2's metadata-preallocation check
# compares the allocated size (st_blocks) with the clusters in use and takes such a
# file for a metadata-preallocated one: block status then reports its holes as zeros
# (commit's copy writes zeroes there; map prints them). Over blkdebug QEMU cannot learn
# the allocated size and never does. With BLKFAULT_ALLOCATED_SIZE=length the preload
# reports a target's st_blocks as at least its length (shim/allocation.c). `!sparse`:
# the image rewritten by `cp --sparse=always` (parity.py).
# ==========================================================================

S9_SPARSE_WORKLOADS: dict[str, Workload] = {w.key: w for w in [
    _replace(WORKLOADS["commitboth"], key="cpcommit",
             pre=WORKLOADS["commitboth"].pre + (("!sparse",),),
             desc="commitboth with the overlay copied by cp --sparse=always (its second data "
                  "cluster's zeros are a hole)"),
    _w("cpmap", 65536, "1G", [["write -P 2 64k 68k"], ("!sparse",)],
       [img("map", "-f", "qcow2", "--output=json", "IMG")],
       "qemu-img map of an image copied by cp --sparse=always (a data cluster half hole)"),
    _w("pmetamap", 65536, "16M", [["write 0 128k", "write 8M 4k"]],
       [img("map", "-f", "qcow2", "--output=json", "IMG")],
       "qemu-img map of a preallocation=metadata image (its unwritten clusters are holes)",
       opts="preallocation=metadata"),
]}
# The preload runs them with BLKFAULT_ALLOCATED_SIZE=length, the switch that gives
# blkdebug's side effect (off by default: where no rule fires, a program under blkfault
# sees what it sees without it, holes included).
S9_SPARSE_WORKLOADS = {k: _replace(w, preload_env=(("BLKFAULT_ALLOCATED_SIZE", "length"),))
                       for k, w in S9_SPARSE_WORKLOADS.items()}
WORKLOADS.update(S9_SPARSE_WORKLOADS)
S9_SPARSE_EVENTS: dict[str, list[str]] = {
    "cpcommit": ["pwritev", "write_aio", "none"],
    # write_aio: map writes nothing, so the map completes and its output is compared
    "cpmap": ["write_aio", "l2_load"],
    "pmetamap": ["write_aio", "l2_load"],
}
for (_ev, _wk) in list(UNDECIDABLE_IMMEDIATELY):
    if _wk == "commitboth":
        UNDECIDABLE_IMMEDIATELY[(_ev, "cpcommit")] = UNDECIDABLE_IMMEDIATELY[(_ev, _wk)]
UNDECIDABLE[("pwritev_done", "cpcommit")] = UNDECIDABLE[("pwritev_done", "commitboth")]

matrix_cases = with_workload_events(matrix_cases, S9_SPARSE_EVENTS)


# ==========================================================================
# Session 9 (s9-3c): counting chains on `refgrow` (`write 0 64M`, 512-byte clusters)
# right after the refcount table's first growth (README "Session 9 (s9-3c)"): the old
# table's free, the new block's load and the allocation's undo come before the search's
# first refblock read, the redo and the next table's allocation before the retry's
# write-back. set-state reftable_grow 1->2, then EVENT k->k+1 from state 2, inject
# EVENT in state n+1 once=on: the nth EVENT after the growth fails.
# ==========================================================================

def after_growth_chain(event: str, n: int) -> list[str]:
    return ([inject_rule(event, 5, "on", state=n + 1), set_state_rule("reftable_grow", 1, 2)]
            + [set_state_rule(event, k, k + 1) for k in range(2, n + 1)])


S9_GROWTH_CHAINS = (("cluster_alloc", 1), ("cluster_alloc", 2), ("refblock_alloc", 2),
                    ("refblock_alloc", 3), ("refblock_load", 2), ("refblock_load", 3))


def s9_growth_chain_cases() -> list[Case]:
    return [chain_case(f"refgrow-{ev}-after-reftable_grow-{n}", "refgrow", after_growth_chain(ev, n),
                       f"set-state reftable_grow 1->2, count {ev} from state 2, inject in state {n + 1} "
                       f"once=on: the {n}th {ev} after the refcount table's first growth")
            for ev, n in S9_GROWTH_CHAINS]


_chain_cases_before_s9grow = chain_cases


def chain_cases() -> list[Case]:
    return _chain_cases_before_s9grow() + s9_growth_chain_cases()


# ==========================================================================
# Session 9 (s9-3d): `qemu-img rebase -b NEW` with the *new* backing file matched.
# - rebasenew: NEW alone (the overlay plain). `NEW:new.qcow2` (parity.py, new_json) is,
#   for the reference, a json: name with a blkdebug node over TEST_DIR/new.qcow2; safe
#   rebase opens it as the new backing file, and writes that name into the header, so
#   afterwards the harness rewrites the header with `qemu-img rebase -u -b new.qcow2` on
#   every side where it names the new file (normalise_new_header).
# - rebasenewboth: the overlay and NEW. QEMU resolves a relative -b name against the
#   overlay's, blkdebug:RULES:/dir/t.qcow2, keeping the prefix: the reference opens NEW
#   through a blkdebug node of its own with the same rules (`REL:new.qcow2`: the same
#   name for every side, the preload matches TEST_DIR/new.qcow2 too). The header holds
#   new.qcow2 everywhere: no normalisation.
# The old backing file has 1s at 0..128k, NEW 3s at 0..64k and 1M..1M+64k, the overlay
# 2s at 64k..68k: the rebase reads both backing files at 0 (they differ: the old data is
# written into the overlay) and at 1M (the old file's zeros are written), skips 64k.
# ==========================================================================

_NEW_PRE = [img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "TEST_DIR/new.qcow2",
                "1G"),
            ["@new.qcow2", "write -P 3 0 64k", "write -P 3 1M 64k"],
            ["write -P 2 64k 4k"]]
S9_NEW_WORKLOADS: dict[str, Workload] = {w.key: _replace(w, hash_files=("base.qcow2", "new.qcow2"))
                                         for w in [
    _w("rebasenew", 65536, "1G", _NEW_PRE,
       [img("rebase", "-f", "qcow2", "-b", "NEW:new.qcow2", "-F", "qcow2", "TEST_DIR/t.qcow2")],
       "safe qemu-img rebase -b new.qcow2 with only the new backing file matched (its "
       "header, refcount table, L2 table and data reads)", base=_BOTH_BASE),
    _w("rebasenewboth", 65536, "1G", _NEW_PRE,
       [img("rebase", "-f", "qcow2", "-b", "REL:new.qcow2", "-F", "qcow2", "IMG")],
       "safe qemu-img rebase -b new.qcow2 with the overlay and the new backing file matched "
       "(reads of the new file, writes of the overlay)", base=_BOTH_BASE),
]}
WORKLOADS.update(S9_NEW_WORKLOADS)
# errno 5, once on/off (every event with --full). The new backing file is opened
# read-only: it raises reftable_load (open), l2_load and read_aio, and no flush
# (flush_to_disk: a no-injection control there).
S9_NEW_EVENTS: dict[str, list[str]] = {
    "rebasenew": ["none", "reftable_load", "l2_load", "read_aio", "flush_to_disk"],
    "rebasenewboth": ["none", "reftable_load", "l2_load", "read_aio", "write_aio", "l2_update",
                      "cluster_alloc"],
}

matrix_cases = with_workload_events(matrix_cases, S9_NEW_EVENTS)


# The overlay of `rebase`/`rebaseboth` (blkdebug under it, the same safe rebase): with
# once=off the close fails the write-back of a refcount block that only the preload's
# run cached (QEMU's metadata-preallocation check over file-posix): the same extra
# "Failed to flush the L2 table cache / refcount block cache".
UNDECIDABLE_ONCE_OFF[("cluster_alloc", "rebasenewboth")] = UNDECIDABLE[("cluster_alloc", "rebase")]


# Per-node state on rebasenewboth: only the new backing file's data is read (the overlay
# is only looked up), only the overlay is written.
PER_NODE_CHAINS += [
    ("rebasenewboth-state-per-node", "rebasenewboth", "write_aio", "read_aio",
     "set-state read_aio 1->2 (the new backing file's reads), inject write_aio in state 2 "
     "(the overlay's writes): per-node state, no injection"),
    ("rebasenewboth-new-l2_load-sets-2", "rebasenewboth", "read_aio", "l2_load",
     "set-state l2_load 1->2, inject read_aio in state 2: the new backing file loads its own "
     "L2 table before its data reads"),
]
