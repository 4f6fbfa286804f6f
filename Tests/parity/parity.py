#!/usr/bin/env python3
"""Parity harness: blkfault (LD_PRELOAD) against QEMU's real blkdebug.

For every case (scenarios.py) the same workload runs three times on fresh
images in a temporary directory:

  reference  qemu-io -f qcow2 ... blkdebug:RULES:/abs/img.qcow2   (real blkdebug)
  subject    LD_PRELOAD=libblkfault.so BLKFAULT_CONFIG=RULES BLKFAULT_IMAGE=/abs/img.qcow2
             qemu-io -f qcow2 ... /abs/img.qcow2
  baseline   qemu-io -f qcow2 ... /abs/img.qcow2                  (no rules at all)

and afterwards `qemu-img check` (never injected) and the image bytes are
compared.  A case whose reference equals the baseline in everything is a
"no injection" case: the subject must equal it too (required 100%).  All other
cases are "inject" cases; "identical" means output, check and bytes identical.

PARITY_SUBJECT (or --subject) replaces the subject for testing the harness:
  preload   (default) the product under test
  blkdebug  real blkdebug again: must give 100% parity
  plain     plain qemu-io without faults: must be reported as different

Run `parity.py --help` for the options; README.md in this folder has examples.
Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenarios  # noqa: E402
from scenarios import Case, Workload  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
QEMU_IO = os.environ.get("QEMU_IO_PROG", "qemu-io")
QEMU_IMG = os.environ.get("QEMU_IMG_PROG", "qemu-img")
IMG_NAME = "t.qcow2"

# qemu-iotests' _filter_qemu_io timing substitution.
TIMING_RE = re.compile(
    r"[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*/sec and [0-9/.inf]* ops/sec\)")
TIMING_SUB = "X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)"
BENCH_RE = re.compile(r"Run completed in [0-9.]+ seconds\.")
NODE_RE = re.compile(r"#block[0-9]+")

# The run directory of the workload the current thread runs: qemu processes start there,
# so that relative names a workload stores in an image (an external data file) resolve
# the same way in every run directory.
_RUN_DIR = threading.local()


# --------------------------------------------------------------------------
# Running qemu
# --------------------------------------------------------------------------

def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("BLKFAULT_")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


@dataclass
class Proc:
    argv: list[str]
    rc: int | str
    stdout: str
    stderr: str
    label: str = ""


class Runner:
    """Knows how to run qemu-io as reference / subject / baseline."""

    def __init__(self, subject: str, so: str | None, timeout: float,
                 qemu_io_args: list[str] | None = None):
        self.subject = subject
        self.so = so
        self.timeout = timeout
        self.qemu_io_args = qemu_io_args or ["-f", "qcow2"]
        self.env = base_env()

    def _run(self, argv, env, merge=False) -> Proc:
        if argv[0] == "strace" and TASKSET:
            # Traced runs are pinned to one CPU: qemu's worker threads then interleave
            # far less, which keeps the syscall order of the refcount-growth workload
            # (2048 concurrent data tasks) reproducible enough to compare.
            argv = [TASKSET, "-c", str(min(os.sched_getaffinity(0))), *argv]
        # own process group, so that a timeout also ends strace's tracee
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                             start_new_session=True, cwd=getattr(_RUN_DIR, "path", None))
        try:
            out, err = p.communicate(timeout=self.timeout)
            rc: int | str = p.returncode
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            rc = f"timeout after {self.timeout:g}s"
        return Proc(argv, rc, (out or b"").decode("utf-8", "replace"),
                    "" if merge else (err or b"").decode("utf-8", "replace"))

    def create(self, img: str, cluster_size: int, size: str, opts: str = "",
               backing: str | None = None, fmt: str = "qcow2",
               backing_fmt: str = "qcow2") -> Proc:
        if fmt == "raw":  # a raw backing file: no qcow2 options
            return self._run([QEMU_IMG, "create", "-f", "raw", img, size], self.env)
        o = f"cluster_size={cluster_size}" + (f",{opts}" if opts else "")
        b = ["-b", backing, "-F", backing_fmt] if backing else []
        return self._run([QEMU_IMG, "create", "-f", "qcow2", "-o", o, *b, img, size], self.env)

    def qemu_img(self, variant: str, args, img: str, cfg: str | None, run_dir: str,
                 strace_to: str | None = None, preload_env: dict[str, str] | None = None) -> Proc:
        """A qemu-img command of a workload (args[0] == "qemu-img"): IMG is the image,
        through blkdebug for the reference; TEST_DIR/ is the run directory.
        strace_to: as qemu_io's (qemu-img takes -T before its command)."""
        how = variant
        if variant == "subject":
            how = {"blkdebug": "reference", "plain": "plain"}.get(self.subject, "preload")
        target = f"blkdebug:{cfg}:{img}" if how == "reference" else img
        # @FILE@ inside an argument (a json: filename opening the image as a backing
        # file) is the image's protocol node: a blkdebug node over it for the reference
        # (no config for the rule-less traced run: an empty one is a file name to read)
        node = (json.dumps({"driver": "blkdebug", **({"config": cfg} if cfg else {}),
                            "image": {"driver": "file", "filename": img}})
                if how == "reference" else json.dumps({"driver": "file", "filename": img}))
        # IMG+BASE: the image with its backing file TEST_DIR/base.qcow2 matched too. For
        # the reference a json: filename puts a blkdebug node under both qcow2 nodes; the
        # backing one names no image (qcow2 hands it the header's backing file name:
        # bdrv_open_backing_file, README "Coverage of issue 3"). BLKFAULT_IMAGE names both.
        both = both_json(img, cfg) if how == "reference" else img
        def new_name(a):  # NEW:NAME / REL:NAME (see NEW_PREFIX, REL_PREFIX)
            name = a.split(":", 1)[1]
            if a.startswith(NEW_PREFIX) and how == "reference":
                return new_json(os.path.join(run_dir, name), cfg)
            return name
        argv = [QEMU_IMG] + [target if a == "IMG" else both if a == BOTH_TOKEN
                             else new_name(a) if a.startswith((NEW_PREFIX, REL_PREFIX))
                             else a.replace("TEST_DIR/", run_dir + "/")
                             .replace("@FILE@", node) for a in args[1:]]
        # MATCH:PATH: another image the rules apply to (a blkdebug node of its own over
        # it for the reference; for the preload, BLKFAULT_IMAGE names it too).
        also = [a[6:] for a in argv if a.startswith("MATCH:")]
        if BOTH_TOKEN in args:
            also.append(os.path.join(os.path.dirname(img), BOTH_BASE))
        also += [os.path.join(run_dir, a.split(":", 1)[1]) for a in args[1:]
                 if a.startswith((NEW_PREFIX, REL_PREFIX))]
        argv = [(f"blkdebug:{cfg}:{a[6:]}" if how == "reference" else a[6:])
                if a.startswith("MATCH:") else a for a in argv]
        env = self.env
        if how == "preload":
            env = dict(self.env, LD_PRELOAD=self.so, BLKFAULT_CONFIG=cfg,
                       BLKFAULT_IMAGE=":".join([img] * image_matched(args) + also),
                       **(preload_env or {}))
        if strace_to:
            argv[1:1] = [a for ev in QEMU_TRACE_EVENTS for a in ("-T", ev)]
            argv = ["strace", "--seccomp-bpf", "-f", "-y", "-s", "160", "-qq",
                    "-e", "trace=" + ",".join(TRACED), "-o", strace_to] + argv
        p = self._run(argv, env)
        p.label = how
        return p

    def check(self, img: str) -> Proc:
        return self._run([QEMU_IMG, "check", "-f", "qcow2", img], self.env, merge=True)

    def qemu_io(self, variant: str, cmds, img: str, cfg: str | None,
                strace_to: str | None = None, fmt: str | None = None,
                preload_env: dict[str, str] | None = None) -> Proc:
        """variant: 'reference' (blkdebug), 'subject', 'plain' (no injection).
        strace_to: run under strace and write the image-file syscalls there."""
        how = variant
        if variant == "subject":
            how = {"blkdebug": "reference", "plain": "plain"}.get(self.subject, "preload")
        argv = [QEMU_IO, *(["-f", fmt] if fmt else self.qemu_io_args)]
        for c in cmds:
            # A bare option ("-C": copy-on-read) goes on the command line as it is.
            argv += [c] if c.startswith("-") and " " not in c else ["-c", c]
        env = self.env
        if how == "reference":
            argv.append(f"blkdebug:{cfg}:{img}")
        elif how == "preload":
            env = dict(self.env, LD_PRELOAD=self.so, BLKFAULT_CONFIG=cfg,
                       BLKFAULT_IMAGE=img, **(preload_env or {}))
            argv.append(img)
        else:
            argv.append(img)
        if strace_to:
            # QEMU's own trace events (log backend: printed on stderr) mark request
            # starts/ends and qcow2 cache flushes in the same timeline as the syscalls.
            argv[1:1] = [a for ev in QEMU_TRACE_EVENTS for a in ("-T", ev)]
            argv = ["strace", "--seccomp-bpf", "-f", "-y", "-s", "160", "-qq",
                    "-e", "trace=" + ",".join(TRACED), "-o", strace_to] + argv
        p = self._run(argv, env)
        p.label = how
        return p


def _io_args(cmds, quote) -> str:
    """qemu-io's -c commands as a shell string; a bare option ("-C") as it is."""
    return " ".join(c if c.startswith("-") and " " not in c else f"-c {quote(c)}" for c in cmds)


# IMG+BASE in a qemu-img command (see Runner.qemu_img): the image and its qcow2 backing
# file, both matched.
BOTH_TOKEN = "IMG+BASE"
BOTH_BASE = "base.qcow2"
# NEW:NAME: `rebase -b`'s new backing file TEST_DIR/NAME, matched (the overlay need not
# be). For the reference a json: name with a blkdebug node over it (new_json); every
# other run gets NAME. The name goes into the overlay's header, so after the command the
# harness rewrites the header with `qemu-img rebase -u -b NAME` on every side where it
# names the new file (normalise_new_header): the same final header write everywhere.
NEW_PREFIX = "NEW:"
# REL:NAME: a relative backing file name next to a matched overlay (IMG). QEMU resolves
# it against the overlay's name, blkdebug:RULES:/dir/t.qcow2, keeping the prefix
# (path_combine): the reference opens it through a blkdebug node of its own with the same
# rules. NAME on every side; the preload matches TEST_DIR/NAME too.
REL_PREFIX = "REL:"


def image_matched(cmds) -> bool:
    """Whether a workload process applies the rules to t.qcow2 itself: always, except in
    a qemu-img command with a NEW: name and no IMG / IMG+BASE (`rebase -b NEW:...
    TEST_DIR/t.qcow2`: only the new backing file is matched)."""
    return not (cmds and cmds[0] == "qemu-img"
                and any(a.startswith(NEW_PREFIX) for a in cmds)
                and not any(a in ("IMG", BOTH_TOKEN) for a in cmds))


def new_json(path: str, cfg: str | None) -> str:
    """`rebase -b`'s new backing file PATH through a blkdebug node (no config key for
    the rule-less traced run). QEMU 7.2 takes it: an absolute json: name is not resolved
    against the overlay (bdrv_get_full_backing_filename_from_filename)."""
    rules = {"config": cfg} if cfg else {}
    return "json:" + json.dumps({
        "driver": "qcow2",
        "file": {"driver": "blkdebug", **rules, "image": {"driver": "file", "filename": path}}})


def header_backing_name(img: str) -> str | None:
    """The backing file name in a qcow2 header (None: none or unreadable)."""
    try:
        with open(img, "rb") as f:
            h = f.read(20)
            off, n = int.from_bytes(h[8:16], "big"), int.from_bytes(h[16:20], "big")
            if not off or not n:
                return None
            f.seek(off)
            return f.read(n).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def matched_others(cmds) -> list[str]:
    """The run-directory names of the images a workload process matches besides
    t.qcow2 (MATCH:TEST_DIR/NAME, IMG+BASE's base.qcow2, NEW:NAME, REL:NAME): each has a blkdebug node of
    its own in the reference, and its own first injected failure (see run_case)."""
    if not cmds or cmds[0] != "qemu-img":
        return []
    out = []
    for a in cmds[1:]:
        if a.startswith("MATCH:"):
            out.append(a[6:].replace("TEST_DIR/", ""))
        elif a == BOTH_TOKEN:
            out.append(BOTH_BASE)
        elif a.startswith((NEW_PREFIX, REL_PREFIX)):
            out.append(a.split(":", 1)[1])
    return out


def both_json(img: str, cfg: str | None) -> str:
    """The json: filename giving an overlay and its backing file a blkdebug node each
    (no config key for the rule-less traced run: an empty one is a file name to read).
    The backing node must not name its image: qcow2 opens the backing file by the
    header's name, and blkdebug would then get two ("Can't specify 'file' and
    'filename' options at the same time")."""
    rules = {"config": cfg} if cfg else {}
    return "json:" + json.dumps({
        "driver": "qcow2",
        "file": {"driver": "blkdebug", **rules, "image": {"driver": "file", "filename": img}},
        "backing": {"driver": "qcow2", "file": {"driver": "blkdebug", **rules}}})


def normalise(text: str, run_dir: str, cfg: str | None) -> str:
    if cfg:  # IMG+BASE's json: filename, where QEMU prints it, is the image's path
        text = text.replace(both_json(os.path.join(run_dir.rstrip("/"), IMG_NAME), cfg),
                            os.path.join(run_dir.rstrip("/"), IMG_NAME))
        # NEW:NAME's json: name (rebase quotes its -b argument) is NAME, as for the preload
        pre, post = new_json(os.path.join(run_dir.rstrip("/"), "@NAME@"), cfg).split("@NAME@")
        text = re.sub(re.escape(pre) + r"([^/\"]+)" + re.escape(post), r"\1", text)
        text = text.replace(f"blkdebug:{cfg}:", "").replace(cfg, "RULES")
    text = text.replace(run_dir.rstrip("/") + "/", "TEST_DIR/")
    text = BENCH_RE.sub("Run completed in X seconds.", text)  # qemu-img bench
    text = NODE_RE.sub("#blockN", text)  # automatic node names count blkdebug's nodes too
    return TIMING_RE.sub(TIMING_SUB, text)


def sha256(path: str, mask_snapshot_dates: bool = False, ranges=(), also_tables=()) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if mask_snapshot_dates:
                b = bytearray(_masked_snapshot_dates(f.read(), also_tables))
                for off, n in ranges:
                    b[off:off + n] = bytes(len(b[off:off + n]))
                h.update(b)
            else:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    except FileNotFoundError:
        return "missing"
    return h.hexdigest()


def snapshot_table(path: str) -> tuple[int, int] | None:
    """(nb_snapshots, snapshots_offset) from a qcow2 header, or None."""
    try:
        with open(path, "rb") as f:
            h = f.read(72)
        return int.from_bytes(h[60:64], "big"), int.from_bytes(h[64:72], "big")
    except (OSError, ValueError):
        return None


def _masked_snapshot_dates(b: bytes, also=()) -> bytes:
    """The image with every snapshot table entry's date_sec/date_nsec zeroed:
    qemu-img snapshot -c stamps the wall clock, the only bytes two otherwise
    identical runs cannot share. `also`: more tables as (count, offset), e.g. the
    one the setup left, which a failed snapshot -d may leave behind unreferenced."""
    b = bytearray(b)
    for n, off in [(int.from_bytes(b[60:64], "big"), int.from_bytes(b[64:72], "big")), *also]:
        try:
            for _ in range(min(n, 10000)):
                id_len = int.from_bytes(b[off + 12:off + 14], "big")
                name_len = int.from_bytes(b[off + 14:off + 16], "big")
                extra = int.from_bytes(b[off + 36:off + 40], "big")
                if off + 24 > len(b):
                    break
                b[off + 16:off + 24] = bytes(8)
                off += 40 + extra + id_len + name_len
                off = (off + 7) & ~7
        except (IndexError, ValueError):
            pass
    return bytes(b)


# ---- syscall traces (used only to say which request blkdebug failed first) ----

TRACED = ["pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
          "fdatasync", "fsync", "fallocate", "ftruncate", "write"]
QEMU_TRACE_EVENTS = ["blk_co_preadv", "blk_co_pwritev", "qcow2_writev_done_req",
                     "qcow2_cache_flush", "qcow2_add_task"]
QEMU_TRACE_LINE = re.compile(r"^(?:%s) " % "|".join(QEMU_TRACE_EVENTS))
_KIND = {"pread64": "read", "preadv": "read", "preadv2": "read",
         "pwrite64": "write", "pwritev": "write", "pwritev2": "write",
         "fdatasync": "flush", "fsync": "flush", "fallocate": "fallocate",
         "ftruncate": "truncate"}
HAVE_STRACE = shutil.which("strace") is not None
TASKSET = shutil.which("taskset")


def _task_range(action: str, ctype: int, host: int, length: int, cluster_size: int):
    """The range of the image file a qcow2_add_task's task reads or writes, or None
    when it does no I/O there.  QEMU 7.2 passes the full host offset (the cluster's
    plus the offset into it) as `file_cluster_offset`; for a compressed cluster
    (subcluster type 5) the L2 entry's offset and size bits.  Type 0/1 reads
    (unallocated) go to the backing file; a compressed write's task (host offset 0)
    writes where qcow2_alloc_bytes puts the data, after compressing it."""
    if action == "write":
        return None if host == 0 else (host, length)
    if ctype in (0, 1):
        return None
    if ctype == 5:
        bits = cluster_size.bit_length() - 1
        shift = 62 - (bits - 8)
        coffset = host & ((1 << shift) - 1)
        sectors = ((host >> shift) & ((1 << (bits - 8)) - 1)) + 1
        return coffset, sectors * 512 - (coffset & 511)
    return host, length


def parse_trace(path: str, img: str, run_idx: int, cluster_size: int) -> list[tuple]:
    """Image-file syscalls and QEMU trace lines of one strace -f -y log, in entry
    order, as (run, kind, offset, length, name, detail) tokens; unfinished/resumed
    lines are merged.  qcow2_add_task lines become 'task' tokens carrying the host
    range of the data sub-request that qcow2 hands to a concurrent task, with its
    node (`bs`) in the name; reads and writes of other files (the backing file, a
    commit's base) become 'other' tokens, which only complete tasks of other nodes."""
    recs, pending = [], {}
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        m = re.match(r"(\d+) +(.*)$", line)
        if not m:
            continue
        pid, rest = m.groups()
        if rest.startswith("<... "):
            i = pending.pop(pid, None)
            mm = re.match(r"<\.\.\. \w+ resumed>(.*)$", rest)
            if i is not None and mm:
                recs[i] += mm.group(1)
            continue
        if rest.endswith("<unfinished ...>"):
            pending[pid] = len(recs)
            recs.append(rest[: -len("<unfinished ...>")].rstrip())
            continue
        recs.append(rest)
    toks = []
    for r in recs:
        m = re.match(r"(\w+)\((\d+)<([^>]*)>,? ?(.*)\) += (.*)$", r)
        if not m:
            continue
        if m.group(1) == "write" and m.group(2) == "2":
            # stderr: QEMU trace events and error messages, as timeline markers
            mm = re.match(r'"(.*?)(?:\\n)?"', m.group(4))
            if not mm:
                continue
            text = re.sub(r"0x[0-9a-f]{6,}|\(nil\)", "P", mm.group(1))
            tm = re.match(r"qcow2_add_task .*?bs (0x[0-9a-f]+) .*?: (\w+): cluster_type (\d+) "
                          r"file_cluster_offset (\d+) offset (\d+) bytes (\d+)", mm.group(1))
            if tm:
                rng = _task_range(tm.group(2), int(tm.group(3)), int(tm.group(4)),
                                  int(tm.group(6)), cluster_size)
                if rng:
                    toks.append((run_idx, "task", rng[0], rng[1],
                                 f"qcow2_add_task bs {tm.group(1)}", tm.group(2)))
            elif not text.startswith("qcow2_add_task "):
                toks.append((run_idx, "qemu", None, text, "stderr", ""))
            continue
        if m.group(1) not in _KIND or not m.group(3).startswith("/"):
            continue
        name, args = m.group(1), m.group(4)
        kind = _KIND[name]
        if m.group(3) != img and kind not in ("read", "write"):
            continue
        nums = re.findall(r"(?<![\w.])(\d+)(?![\w.])", args)
        off = length = None
        detail = ""
        if kind in ("read", "write"):
            if name.endswith("v") or name.endswith("v2"):
                lens = [int(x) for x in re.findall(r"iov_len=(\d+)", args)]
                length = sum(lens)
                tail = re.findall(r"\], *\d+, *(\d+)", args)
                off = int(tail[0]) if tail else None
                detail = f"{len(lens)} iovecs"
            elif len(nums) >= 2:
                length, off = int(nums[-2]), int(nums[-1])
        elif kind == "fallocate":
            mode = args.split(",")[0].strip()
            detail = mode
            if len(nums) >= 2:
                off, length = int(nums[-2]), int(nums[-1])
        elif kind == "truncate" and nums:
            length = int(nums[-1])
        if m.group(3) != img:
            toks.append((run_idx, "other", off, length, m.group(3), kind))
            continue
        toks.append((run_idx, kind, off, length, name, detail))
    return toks


def _streams(toks):
    """Split a token list into the serial stream [(pos, key)] and the data tasks
    that never issued their I/O [(pos, token)].

    qcow2 runs the data part of a request in up to 8 concurrent tasks, so their
    reads/writes land anywhere between the metadata I/O of the request coroutine.
    Those task I/Os (recognised by overlapping the host range announced by
    qcow2_add_task, until the request ends) are taken out of the serial stream;
    what remains (metadata I/O, flushes, QEMU trace lines of the request
    coroutine) is issued in a fixed order and can be compared position by
    position.  A task whose I/O never shows up was failed by blkdebug."""
    import bisect
    key = lambda t: t[:4]  # noqa: E731
    serial, failed = [], []
    # open tasks per node (bs): non-overlapping, sorted by start: parallel lists
    nodes: dict[str, tuple[list[int], list[list]]] = {}  # [start, end, pos, token, claimed]
    # which file each node's tasks were seen doing I/O in (IMAGE: the image); tasks of
    # a node that works on another file (a backing file, a commit's base) never fail here
    IMAGE = ""
    owner: dict[str, str] = {}
    pending: list[list] = []  # tasks of this run closed with no I/O: [pos, token, bs, kind, lo, hi]
    cur_run = None

    def close():
        for bs, (_, tasks) in nodes.items():
            pending.extend([ot[2], ot[3], bs, ot[3][5], ot[0], ot[1]] for ot in tasks if not ot[4])
        nodes.clear()

    def end_run():
        close()
        failed.extend((p[0], p[1]) for p in pending if owner.get(p[2], IMAGE) == IMAGE)
        pending.clear()
        owner.clear()

    def overlapping(starts, tasks, lo, hi):
        j = bisect.bisect_left(starts, hi) - 1
        out = []
        while j >= 0 and tasks[j][1] > lo:
            out.append(j)
            j -= 1
        return out

    def claim(lo, hi, want, where):
        """Mark the open tasks of nodes working on `where` (or not yet seen) that
        this I/O completes; whether there were any."""
        hit = False
        for bs, (starts, tasks) in nodes.items():
            if owner.get(bs, where) != where:
                continue
            for j in overlapping(starts, tasks, lo, hi):
                if tasks[j][3][5] == want:
                    tasks[j][4] = hit = True
                    owner[bs] = where
        return hit

    for pos, t in enumerate(toks):
        run, kind, off, length, name, detail = t
        if run != cur_run:
            end_run()
            cur_run = run
        if kind == "task":
            bs = name.split()[-1]
            starts, tasks = nodes.setdefault(bs, ([], []))
            # a new task over the range of an earlier one that did no I/O: the
            # earlier one failed and its clusters were freed and reused
            for j in overlapping(starts, tasks, off, off + length):  # descending indexes
                if not tasks[j][4]:
                    ot = tasks[j]
                    pending.append([ot[2], ot[3], bs, ot[3][5], ot[0], ot[1]])
                del starts[j], tasks[j]
            j = bisect.bisect_left(starts, off)
            starts.insert(j, off)
            tasks.insert(j, [off, off + length, pos, t, False])
            continue
        if kind == "other":
            # another file's I/O: it completes tasks of the node working on that file
            if off is not None and length:
                claim(off, off + length, detail, name)
                for p in [p for p in pending if p[3] == detail and p[4] < off + length
                          and off < p[5] and owner.get(p[2], name) == name]:
                    owner[p[2]] = name
                    pending.remove(p)
            continue
        if kind == "qemu" and length.startswith(("qcow2_writev_done_req", "blk_co_p")):
            close()
        elif kind in ("read", "write", "fallocate") and off is not None and length:
            # (a write task may first zero its clusters: fallocate, notes §3.4 S8)
            want = "write" if kind == "fallocate" else kind
            if kind == "fallocate":  # zeroing alone does not complete a write task
                if any(owner.get(bs, IMAGE) == IMAGE and any(tasks[j][3][5] == want for j in
                       overlapping(starts, tasks, off, off + length))
                       for bs, (starts, tasks) in nodes.items()):
                    continue
            elif claim(off, off + length, want, IMAGE):
                continue
        if kind == "flush" and serial and serial[-1][1][1] == "flush":
            # Whether a flush right after another one reaches fdatasync depends on
            # whether a concurrent data write completed in between (flush
            # generations, notes §2.8), so runs of flushes count as one.
            continue
        serial.append((pos, key(t)))
    end_run()
    failed.sort(key=lambda f: f[0])
    return serial, failed


_STREAM_CACHE: dict[int, list] = {}


def _streams_cached(base):
    k = id(base)
    if k not in _STREAM_CACHE:
        _STREAM_CACHE[k] = (_streams(base)[0], base)  # keep base alive: stable id
    return _STREAM_CACHE[k][0]


def first_failure(base: list[tuple], ref: list[tuple], cache: bool = True):
    """(token, serial index) of the request blkdebug failed first in the injected
    reference run, or (None, None).  A request blkdebug fails never reaches the
    image file, so it is the first request of the rule-less run (base) missing from
    the injected run.  Serial streams are compared position by position; a data
    task that issued no I/O is a failed task; the earlier of the two (by position
    in the injected run) wins.  The serial index says how far into the run that
    was (see Harness.baseline for how it is used)."""
    bs = _streams_cached(base) if cache else _streams(base)[0]
    rs, rfailed = _streams(ref)
    cands = []
    for i, (bpos, bkey) in enumerate(bs):
        if i >= len(rs) or rs[i][1] != bkey:
            cands.append((rs[i][0] if i < len(rs) else len(ref), i, base[bpos]))
            break
    if rfailed:
        pos, t = min(rfailed)
        run, kind, off, length, name, detail = t
        idx = sum(1 for p, _ in rs if p < pos)
        cands.append((pos, idx, (run, detail, off, length, f"data {detail} task",
                                 "issued no I/O: its request was failed")))
    if not cands:
        return None, None
    pos, idx, tok = min(cands, key=lambda c: c[0])
    return tok, idx


def describe_tok(t) -> str:
    run, kind, off, length, name, detail = t
    s = f"{name}"
    if kind in ("qemu", "task"):
        what = f"QEMU trace line '{length}'" if kind == "qemu" else \
            f"qcow2_add_task {detail} {length} bytes @{off}"
        return f"(no request missing; first difference at {what} in injected run {run + 1})"
    elif kind == "flush":
        s += " (flush)"
    elif kind == "truncate":
        s += f" to {length}"
    else:
        s += f" {length} bytes @{off}"
    if detail:
        s += f" [{detail}]"
    return s + f" in injected run {run + 1}"


@dataclass
class RunResult:
    """One of reference / subject / baseline for one case."""
    variant: str
    setup: list[dict] = field(default_factory=list)  # create + pre-steps (no injection)
    runs: list[dict] = field(default_factory=list)  # injected qemu-io processes
    check_rc: int | str = None
    check_out: str = ""
    digest: str = ""
    size: int = -1
    img: str = ""
    trace: list = field(default_factory=list)
    # the other matched images' traces (matched_others): run-directory name -> tokens
    other_traces: dict = field(default_factory=dict)

    def output_key(self):
        return [(r["rc"], r["stdout"], r["stderr"]) for r in self.setup[1:] + self.runs]

    def check_key(self):
        return (self.check_rc, self.check_out)

    def transcript(self) -> str:
        lines = []
        for r in self.setup + self.runs:
            lines.append(f"$ {r['cmd']}    # {r['what']}")
            lines.append(f"rc={r['rc']}")
            lines.append("--- stdout")
            lines.append(r["stdout"].rstrip("\n"))
            lines.append("--- stderr")
            lines.append(r["stderr"].rstrip("\n"))
            lines.append("")
        return "\n".join(lines) + "\n"

    def check_text(self) -> str:
        return f"$ qemu-img check -f qcow2 TEST_DIR/{IMG_NAME}\nrc={self.check_rc}\n{self.check_out}"


def _cmd_str(cmds, what, cfg_shown):
    if cmds[0] == "qemu-img":
        return " ".join(f"{cfg_shown}TEST_DIR/{IMG_NAME}" if a == "IMG"
                        else f"{cfg_shown}TEST_DIR/{IMG_NAME}(+{cfg_shown}TEST_DIR/{BOTH_BASE})"
                        if a == BOTH_TOKEN
                        else f"{a.split(':', 1)[1]}(matched: {cfg_shown}TEST_DIR/{a.split(':', 1)[1]})"
                        if a.startswith((NEW_PREFIX, REL_PREFIX)) else shlex.quote(a) for a in cmds)
    s = "qemu-io -f qcow2 " + _io_args(cmds, shlex.quote)
    return s + f" {cfg_shown}TEST_DIR/{IMG_NAME}"


def run_workload(runner: Runner, wl: Workload, variant: str, run_dir: str,
                 cfg: str | None, trace: bool = False,
                 snap_dir: str | None = None) -> RunResult:
    """variant: reference | subject | baseline.  trace: run the injected qemu-io
    processes under strace and keep their image-file syscalls in res.trace.
    snap_dir: copy the run directory to snap_dir/I before each traced qemu-io
    process I after the first (the state that process starts from)."""
    os.makedirs(run_dir, exist_ok=True)
    _RUN_DIR.path = run_dir
    try:
        return _run_workload(runner, wl, variant, run_dir, cfg, trace, snap_dir)
    finally:
        _RUN_DIR.path = None


def _run_workload(runner: Runner, wl: Workload, variant: str, run_dir: str,
                  cfg: str | None, trace: bool, snap_dir: str | None = None) -> RunResult:
    os.makedirs(run_dir, exist_ok=True)
    img = os.path.join(run_dir, IMG_NAME)
    res = RunResult(variant=variant, img=img)
    backing = None
    if wl.base:
        backing = os.path.join(run_dir, "base." + wl.base_fmt)
        p = runner.create(backing, wl.cluster_size, wl.size, wl.opts, fmt=wl.base_fmt)
        res.setup.append({"cmd": f"qemu-img create -f {wl.base_fmt} -o {wl.create_opts()} "
                                 f"TEST_DIR/base.{wl.base_fmt} {wl.size}", "what": "setup",
                          "rc": p.rc, "stdout": normalise(p.stdout, run_dir, None),
                          "stderr": normalise(p.stderr, run_dir, None)})
        for cmds in wl.base:
            p = runner.qemu_io("plain", cmds, backing, None, fmt=wl.base_fmt)
            res.setup.append({"cmd": _cmd_str(cmds, "pre", "").replace(IMG_NAME, "base." + wl.base_fmt),
                              "what": "base image, no injection", "rc": p.rc,
                              "stdout": normalise(p.stdout, run_dir, None),
                              "stderr": normalise(p.stderr, run_dir, None)})
    # The overlay names its backing file relative to itself: the header then holds the
    # same bytes in every run directory.
    p = runner.create(img, wl.cluster_size, wl.size, wl.opts,
                      "base." + wl.base_fmt if backing else None, backing_fmt=wl.base_fmt)
    res.setup.append({"cmd": f"qemu-img create -f qcow2 -o {wl.create_opts()} "
                             + (f"-b TEST_DIR/base.{wl.base_fmt} -F {wl.base_fmt} " if backing else "")
                             + f"TEST_DIR/{IMG_NAME} {wl.size}", "what": "setup",
                      "rc": p.rc, "stdout": normalise(p.stdout, run_dir, None),
                      "stderr": normalise(p.stderr, run_dir, None)})
    for cmds in wl.pre:
        if cmds[0] == "!patch":  # crafted bytes (a leak, a corruption): !patch OFFSET HEX
            with open(img, "r+b") as f:
                f.seek(int(cmds[1], 0))
                f.write(bytes.fromhex(cmds[2]))
            p = Proc(list(cmds), 0, "", "")
        elif cmds[0] == "!sparse":  # the image as `cp --sparse=always` leaves a copy: holes for zeros
            subprocess.run(["cp", "--sparse=always", img, img + ".sparse"], check=True)
            os.replace(img + ".sparse", img)
            p = Proc(list(cmds), 0, "", "")
        elif cmds[0] == "qemu-img":
            p = runner.qemu_img("plain", cmds, img, None, run_dir)
        elif cmds[0].startswith("@"):  # qemu-io on another file of the run directory
            p = runner.qemu_io("plain", cmds[1:], os.path.join(run_dir, cmds[0][1:]), None)
        else:
            p = runner.qemu_io("plain", cmds, img, None)
        res.setup.append({"cmd": _cmd_str(cmds, "pre", ""), "what": "pre-step, no injection",
                          "rc": p.rc, "stdout": normalise(p.stdout, run_dir, None),
                          "stderr": normalise(p.stderr, run_dir, None)})
    setup_table = snapshot_table(img) if wl.snapshots else None
    qvar = {"reference": "reference", "subject": "subject", "baseline": "plain"}[variant]
    for i, cmds in enumerate(wl.runs):
        tr = os.path.join(run_dir, f"strace.{i}") if trace else None
        if cmds[0] == "qemu-img":
            # traced too: a flush blkdebug fails at a close and qcow2 retries shows
            # only in where the qcow2_cache_flush lines fall (check -r, --full 38/40)
            p = runner.qemu_img(qvar, cmds, img, cfg, run_dir, strace_to=tr,
                                preload_env=dict(wl.preload_env))
        else:
            if tr and snap_dir and i > 0:
                shutil.copytree(run_dir, os.path.join(snap_dir, str(i)),
                                ignore=shutil.ignore_patterns("strace.*"))
            p = runner.qemu_io(qvar, cmds, img, cfg, strace_to=tr,
                               preload_env=dict(wl.preload_env))
        if tr:
            res.trace += parse_trace(tr, img, i, wl.cluster_size)
            for name in matched_others(cmds):
                res.other_traces.setdefault(name, []).extend(
                    parse_trace(tr, os.path.join(run_dir, name), i, wl.cluster_size))
            p.stderr = "".join(ln for ln in p.stderr.splitlines(True)
                               if not QEMU_TRACE_LINE.match(ln))
        shown = {"reference": "blkdebug:RULES:", "preload": "[LD_PRELOAD] ",
                 "plain": ""}[p.label]
        res.runs.append({"cmd": _cmd_str(cmds, "run", shown),
                         "what": f"injected ({p.label})" if variant != "baseline"
                         else "baseline, no rules",
                         "rc": p.rc, "stdout": normalise(p.stdout, run_dir, cfg),
                         "stderr": normalise(p.stderr, run_dir, cfg)})
        for a in cmds:
            if a.startswith(NEW_PREFIX):
                res.runs.append(normalise_new_header(runner, img, a[len(NEW_PREFIX):],
                                                     p.label, run_dir, cfg))
    p = runner.check(img)
    res.check_rc = p.rc
    res.check_out = normalise(p.stdout, run_dir, None)
    res.digest = sha256(img, wl.snapshots, wl.mask_ranges, [setup_table] if setup_table else [])
    for name in getattr(wl, "hash_files", ()):  # other files the workload writes
        res.digest += "+" + sha256(os.path.join(run_dir, name))
    try:
        res.size = os.path.getsize(img)
    except OSError:
        res.size = -1
    return res


def normalise_new_header(runner: Runner, img: str, name: str, how: str, run_dir: str,
                         cfg: str | None) -> dict:
    """After a command with NEW:NAME: where the overlay's header names the new backing
    file as this side gave it (the reference's json: name, everyone else's NAME), write
    NAME with `qemu-img rebase -u` (header only, no injection), so that every side's
    header went through the same last write. Where it names anything else (the command
    failed before switching), leave it and say so: that is compared like any output."""
    given = new_json(os.path.join(run_dir, name), cfg) if how == "reference" else name
    have = header_backing_name(img)
    if have != given:
        return {"cmd": f"(header not normalised: backing file {have!r})",
                "what": "post-step", "rc": 0, "stdout": "", "stderr": ""}
    p = runner._run([QEMU_IMG, "rebase", "-u", "-f", "qcow2", "-b", name, "-F", "qcow2", img],
                    runner.env)
    return {"cmd": f"qemu-img rebase -u -f qcow2 -b {name} -F qcow2 TEST_DIR/{IMG_NAME}",
            "what": "post-step: header normalised, no injection", "rc": p.rc,
            "stdout": normalise(p.stdout, run_dir, None),
            "stderr": normalise(p.stderr, run_dir, None)}


def same3(a: RunResult, b: RunResult) -> tuple[bool, bool, bool]:
    return (a.output_key() == b.output_key(), a.check_key() == b.check_key(),
            a.digest == b.digest)


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

@dataclass
class CaseResult:
    case: Case
    kind: str = ""  # inject | no-injection | error
    undecidable: str = ""  # why blkfault cannot decide this case from outside
    same_output: bool = False
    same_check: bool = False
    same_bytes: bool = False
    tags: list[str] = field(default_factory=list)
    first_failure: str | None = None  # request blkdebug failed first (from strace)
    diff_dir: str | None = None
    seconds: float = 0.0
    error: str | None = None
    ref: RunResult | None = None
    subj: RunResult | None = None

    @property
    def identical(self):
        return self.same_output and self.same_check and self.same_bytes


class Harness:
    def __init__(self, args, runner: Runner):
        self.args = args
        self.runner = runner
        self.work = args.workdir
        self.out = Path(args.out)
        self.baselines: dict[str, RunResult] = {}
        self.trace_bases: dict[str, list] = {}
        self.trace_unstable: dict[str, int] = {}
        # the same for the other matched images, keyed (workload, image name)
        self.other_trace_bases: dict[tuple[str, str], list] = {}
        self.other_trace_unstable: dict[tuple[str, str], int] = {}
        self.use_strace = HAVE_STRACE and not args.no_strace
        self.lock = threading.Lock()
        self.done = 0
        self.total = 0

    # The baseline depends only on the workload (no rules), so it is computed once
    # per workload instead of once per case; qcow2 writes no timestamps, so it is
    # deterministic (a --full run with PARITY_SUBJECT=blkdebug confirms it: every
    # no-injection case matches it byte for byte).
    def baseline(self, wl: Workload) -> RunResult:
        d = os.path.join(self.work, "baseline", wl.key)
        r = run_workload(self.runner, wl, "baseline", d, None)
        if self.use_strace:
            # rule-less blkdebug (blkdebug::IMG), traced twice: see run_case.  If the
            # two runs do not agree, first-failure answers on this workload are
            # marked unreliable instead of being trusted.
            rs = [run_workload(self.runner, wl, "reference",
                               os.path.join(self.work, "tracebase", f"{wl.key}.{i}"), "",
                               trace=True) for i in range(2)]
            ts = [r.trace for r in rs]
            for name, toks in rs[0].other_traces.items():
                self.other_trace_bases[(wl.key, name)] = toks
                odd, idx = first_failure(toks, rs[1].other_traces.get(name, []))
                if odd:
                    self.other_trace_unstable[(wl.key, name)] = idx
            # Only the refcount-growth workloads (many concurrent data tasks whose
            # L2 linking also does metadata I/O) have been seen to differ, late in
            # the run (~75% in); answers before that point are still trusted.
            self.trace_bases[wl.key] = ts[0]
            odd, idx = first_failure(ts[0], ts[1])
            if odd:
                self.trace_unstable[wl.key] = idx
                if self.args.verbose:
                    print(f"parity: note: two rule-less traced runs of workload {wl.key} "
                          f"differ at serial step {idx} ({describe_tok(odd)}); first-failure "
                          "answers from there on are marked unreliable", file=sys.stderr)
            for i in range(2):
                if not self.args.keep:
                    shutil.rmtree(os.path.join(self.work, "tracebase", f"{wl.key}.{i}"),
                                  ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(d, ignore_errors=True)
        return r

    def later_first_failures(self, wl: Workload, traced: RunResult, snap_dir: str):
        """[(process index, token)]: the first request blkdebug failed in each traced
        qemu-io process after the first.  Each process opens a new blkdebug node
        (its rules re-armed), so each can have a first failure of its own.  A later
        process starts from the image the earlier injected ones left, which the
        rule-less baseline never saw: its own rule-less run starts from a copy of
        that image (snap_dir/I, taken just before it ran) instead."""
        out = []
        for i, cmds in enumerate(wl.runs):
            d = os.path.join(snap_dir, str(i))
            if i == 0 or not os.path.isdir(d):
                continue
            img = os.path.join(d, IMG_NAME)
            tr = os.path.join(d, "strace.base")
            self.runner.qemu_io("reference", cmds, img, "", strace_to=tr)
            base = parse_trace(tr, img, i, wl.cluster_size)
            first, _ = first_failure(base, [t for t in traced.trace if t[0] == i],
                                     cache=False)
            if first:
                out.append((i, first))
        return out

    def run_case(self, case: Case) -> CaseResult:
        t0 = time.monotonic()
        cr = CaseResult(case)
        cdir = os.path.join(self.work, "cases", case.id)
        os.makedirs(cdir, exist_ok=True)
        cfg = os.path.join(cdir, "rules.cfg")
        Path(cfg).write_text(case.rules)
        try:
            ref = run_workload(self.runner, case.workload, "reference",
                               os.path.join(cdir, "ref"), cfg)
            subj = run_workload(self.runner, case.workload, "subject",
                                os.path.join(cdir, "subj"), cfg)
            base = self.baselines[case.workload.key]
            cr.ref, cr.subj = ref, subj
            cr.kind = "no-injection" if all(same3(ref, base)) else "inject"
            cr.same_output, cr.same_check, cr.same_bytes = same3(ref, subj)
            # Flush-latch classification (notes §7.2).  QEMU's file-posix latches a
            # failed fdatasync: once one flush failed, every later flush fails without
            # calling fdatasync again.  Real blkdebug fails flushes *above* file-posix,
            # so with `once` exactly one flush fails; a preload that fails the
            # fdatasync itself makes all later flushes fail too.  That is an inherent
            # difference of the approach, so such cases are tagged "flush-latch" (not
            # hidden: they still count as differing if they differ).
            # Detection: a request that blkdebug fails never reaches the image file.
            # The reference is re-run under strace and its image-file syscalls are
            # compared with those of a rule-less blkdebug run of the same workload;
            # the first request missing from the injected run is the first injected
            # failure.  If that is an fdatasync/fsync, the case is tagged.  (Comparing
            # outcomes of an `iotype = "flush"` rule variant instead does not work: a
            # failed L1 write and a failed flush right after it give identical
            # results, because qcow2 rolls the allocation back either way.)
            # The traced run is also a determinism check of the reference.
            # A reference identical to the baseline can still have had a request
            # failed (a close-time flush whose error QEMU ignores). When the subject
            # differs, look: if blkdebug did fail a request, it is an inject case.
            probe = cr.kind == "no-injection" and not all(same3(ref, subj))
            if (cr.kind == "inject" or probe) and self.use_strace:
                snaps = os.path.join(cdir, "snaps")
                tr = run_workload(self.runner, case.workload, "reference",
                                  os.path.join(cdir, "traced"), cfg, trace=True,
                                  snap_dir=snaps)
                first, idx = first_failure(self.trace_bases[case.workload.key], tr.trace)
                if not any(image_matched(c) for c in case.workload.runs):
                    # t.qcow2 has no rules (rebasenew): what it misses follows from a
                    # failure on a matched image; only those are looked at (below)
                    first, idx = None, None
                cr.first_failure = describe_tok(first) if first else None
                if probe and first:
                    cr.kind = "inject"
                    cr.tags.append("invisible-in-reference")
                unstable = self.trace_unstable.get(case.workload.key)
                if unstable is not None and (idx is None or idx >= unstable):
                    cr.first_failure = f"unreliable ({cr.first_failure})"
                elif first and first[1] == "flush":
                    cr.tags.append("flush-latch")
                elif first:
                    # The latch is per process: a later process whose own first
                    # failure is a flush is as much a flush-latch case.
                    later = self.later_first_failures(case.workload, tr, snaps)
                    flushes = [(i, t) for i, t in later if t[1] == "flush"]
                    if flushes:
                        cr.tags.append("flush-latch")
                        cr.first_failure = (f"{cr.first_failure}; first in process "
                                            f"{flushes[0][0] + 1}: {describe_tok(flushes[0][1])}")
                # Every other matched image has a blkdebug node (rules, `once`) and a
                # file-posix node (the latch) of its own: its own first failure counts
                # like a later process's (convboth's source, commitboth's base).
                for name, toks in sorted(tr.other_traces.items()):
                    key = (case.workload.key, name)
                    ofirst, oidx = first_failure(self.other_trace_bases.get(key, []), toks)
                    if not ofirst:
                        continue
                    if probe and cr.kind == "no-injection":
                        cr.kind = "inject"
                        cr.tags.append("invisible-in-reference")
                    ounstable = self.other_trace_unstable.get(key)
                    text = f"on {name}: {describe_tok(ofirst)}"
                    if ounstable is not None and (oidx is None or oidx >= ounstable):
                        text = f"on {name}: unreliable ({describe_tok(ofirst)})"
                    elif ofirst[1] == "flush" and "flush-latch" not in cr.tags:
                        cr.tags.append("flush-latch")
                    cr.first_failure = f"{cr.first_failure}; {text}" if cr.first_failure else text
                if not all(same3(ref, tr)):
                    cr.tags.append("unstable-reference")
            reason = scenarios.UNDECIDABLE.get((case.event, case.workload.key))
            if case.params.get("immediately") == "on":
                reason = reason or scenarios.UNDECIDABLE_IMMEDIATELY.get(
                    (case.event, case.workload.key))
            if case.params.get("once") == "off":
                reason = reason or scenarios.UNDECIDABLE_ONCE_OFF.get(
                    (case.event, case.workload.key))
            if case.params.get("once") == "on":
                reason = reason or scenarios.UNDECIDABLE_ONCE_ON.get(
                    (case.event, case.workload.key))
            if cr.kind == "inject" and reason:
                cr.tags.append("undecidable")
                cr.undecidable = reason
            if not cr.identical:
                cr.diff_dir = self.write_diff(case, ref, subj, base, cr)
        except Exception as e:  # a harness bug must not kill the whole run
            cr.kind = "error"
            cr.error = f"{type(e).__name__}: {e}"
        finally:
            if not self.args.keep:
                shutil.rmtree(cdir, ignore_errors=True)
        cr.seconds = time.monotonic() - t0
        with self.lock:
            self.done += 1
            if self.args.verbose or not cr.identical:
                state = "ok" if cr.identical else (
                    f"DIFF out={int(cr.same_output)} check={int(cr.same_check)} "
                    f"bytes={int(cr.same_bytes)}")
                if cr.error:
                    state = "ERROR " + cr.error
                tags = f" [{','.join(cr.tags)}]" if cr.tags else ""
                print(f"[{self.done}/{self.total}] {case.id} ({cr.kind}): {state}{tags}",
                      file=sys.stderr, flush=True)
            elif self.done % 100 == 0:
                print(f"[{self.done}/{self.total}] ...", file=sys.stderr, flush=True)
        return cr

    def write_diff(self, case, ref, subj, base, cr) -> str:
        d = self.out / "diffs" / case.id
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        (d / "rules.cfg").write_text(case.rules)
        (d / "reference.out").write_text(ref.transcript())
        (d / "subject.out").write_text(subj.transcript())
        (d / "baseline.out").write_text(base.transcript())
        (d / "reference.check").write_text(ref.check_text())
        (d / "subject.check").write_text(subj.check_text())
        diff = difflib.unified_diff(
            (ref.transcript() + ref.check_text()).splitlines(),
            (subj.transcript() + subj.check_text()).splitlines(),
            "reference", "subject", lineterm="")
        (d / "output.diff").write_text("\n".join(diff) + "\n")
        b = [f"reference: {ref.size} bytes sha256 {ref.digest}",
             f"subject:   {subj.size} bytes sha256 {subj.digest}",
             f"baseline:  {base.size} bytes sha256 {base.digest}"]
        if ref.digest != subj.digest and os.path.exists(ref.img) and os.path.exists(subj.img):
            p = subprocess.Popen(["cmp", "-l", ref.img, subj.img], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace")
            lines = []
            for line in p.stdout:
                lines.append(line.rstrip("\n"))
                if len(lines) == 64:
                    break
            p.kill()
            p.wait()
            b.append("cmp -l (offset is 1-based decimal, bytes octal), first 64 lines:")
            b += lines
        (d / "bytes.txt").write_text("\n".join(b) + "\n")
        meta = {"id": case.id, "event": case.event, "workload": case.workload.key,
                "workload_desc": case.workload.desc, "kind": cr.kind, "tags": cr.tags,
                "same_output": cr.same_output, "same_check": cr.same_check,
                "same_bytes": cr.same_bytes, "note": case.note,
                "first_failure_in_reference": cr.first_failure}
        (d / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
        (d / "repro.sh").write_text(repro_script(case, self.runner))
        (d / "repro.sh").chmod(0o755)
        return str(d)


# @FILE@ (see Runner.qemu_img) inside a single-quoted shell argument
_FILE_NODE_SH = {
    True: '{"driver":"blkdebug","config":"\'"$RULES"\'","image":{"driver":"file",'
          '"filename":"\'"$IMG"\'"}}',
    False: '{"driver":"file","filename":"\'"$IMG"\'"}'}


# IMG+BASE (see both_json) for the reference, inside a single-quoted shell argument
_BOTH_SH = ("'json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"blkdebug\",\"config\":\"'\"$RULES\"'\","
            "\"image\":{\"driver\":\"file\",\"filename\":\"'\"$IMG\"'\"}},\"backing\":{\"driver\":\"qcow2\","
            "\"file\":{\"driver\":\"blkdebug\",\"config\":\"'\"$RULES\"'\"}}}'")


def repro_script(case: Case, runner: Runner) -> str:
    wl = case.workload
    q = shlex.quote
    so = runner.so or "/path/to/libblkfault.so"
    L = ["#!/bin/sh",
         f"# Reproduce parity case {case.id}",
         f"# workload {wl.key}: {wl.desc}",
         f"# {case.note}" if case.note else "#",
         "# Runs the workload against real blkdebug (reference) and through the",
         "# preload (subject) on fresh images, then qemu-img check and cmp.",
         "set -u",
         'HERE=$(cd "$(dirname "$0")" && pwd)',
         'RULES="$HERE/rules.cfg"',
         f"SO=${{BLKFAULT_SO:-{so}}}",
         '[ -f "$SO" ] || { echo "libblkfault.so not found: set BLKFAULT_SO" >&2; exit 2; }',
         "W=$(mktemp -d /tmp/blkfault-repro.XXXXXX)",
         "run() {",
         '    mkdir -p "$W/$1"; IMG="$W/$1/t.qcow2"',
         ]
    bk = ""
    if wl.base:
        bf = wl.base_fmt
        L.append(f'    qemu-img create -q -f {bf} '
                 + (f'-o {wl.create_opts()} ' if bf == "qcow2" else "")
                 + f'"$W/$1/base.{bf}" {wl.size}')
        for cmds in wl.base:
            L.append(f"    qemu-io -f {bf} " + " ".join(f"-c {q(c)}" for c in cmds)
                     + f' "$W/$1/base.{bf}" >/dev/null   # base image, no injection')
        bk = f'-b base.{bf} -F {bf} '
    L.append(f'    qemu-img create -q -f qcow2 -o {wl.create_opts()} {bk}"$IMG" {wl.size}')

    def img_cmd(cmds, target):
        ref = "blkdebug" in target

        def arg(a):
            if a == "IMG":
                return target
            if a == BOTH_TOKEN:
                return _BOTH_SH if ref else '"$IMG"'
            if a.startswith("MATCH:"):  # another matched image (Runner.qemu_img)
                a = ('blkdebug:"$RULES":' if ref else "") + q(a[6:])
            if a.startswith(NEW_PREFIX) and ref:  # new_json, inside single quotes
                return ("'json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"blkdebug\","
                        "\"config\":\"'\"$RULES\"'\",\"image\":{\"driver\":\"file\","
                        "\"filename\":\"'\"$W/$1/" + a[len(NEW_PREFIX):] + "\"'\"}}}'")
            if a.startswith((NEW_PREFIX, REL_PREFIX)):
                return q(a.split(":", 1)[1])
            return (q(a) if not a.startswith("blkdebug:") else a).replace(
                "TEST_DIR/", '"$W/$1"/').replace("@FILE@", _FILE_NODE_SH[ref])
        return " ".join(arg(a) for a in cmds)

    penv = "".join(f"{k}={q(v)} " for k, v in wl.preload_env)  # the preload's switches

    def img_env(cmds):  # BLKFAULT_IMAGE: the image, MATCH: images, IMG+BASE's backing file
        extra = [q(a[6:]).replace("TEST_DIR/", '"$W/$1"/') for a in cmds if a.startswith("MATCH:")]
        extra += ['"$W/$1"/' + BOTH_BASE] * (BOTH_TOKEN in cmds)
        extra += ['"$W/$1"/' + a.split(":", 1)[1] for a in cmds
                  if a.startswith((NEW_PREFIX, REL_PREFIX))]
        return ":".join(['"$IMG"'] * image_matched(cmds) + extra)
    for cmds in wl.pre:
        if cmds[0] == "!patch":
            L.append("    python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); "
                     "f.seek(int(sys.argv[2], 0)); f.write(bytes.fromhex(sys.argv[3]))' "
                     f'"$IMG" {cmds[1]} {cmds[2]}   # crafted bytes')
            continue
        if cmds[0] == "!sparse":
            L.append('    cp --sparse=always "$IMG" "$IMG.sparse" && mv "$IMG.sparse" "$IMG"   # holes for zeros')
            continue
        if cmds[0] == "qemu-img":
            L.append("    " + img_cmd(cmds, '"$IMG"') + " >/dev/null   # pre-step, no injection")
            continue
        if cmds[0].startswith("@"):
            L.append("    qemu-io -f qcow2 " + " ".join(f"-c {q(c)}" for c in cmds[1:])
                     + f' "$W/$1/{cmds[0][1:]}" >/dev/null   # pre-step, no injection')
            continue
        L.append("    qemu-io -f qcow2 " + " ".join(f"-c {q(c)}" for c in cmds)
                 + ' "$IMG" >/dev/null   # pre-step, no injection')
    for cmds in wl.runs:
        if cmds[0] == "qemu-img":
            L += ['    if [ "$1" = reference ]; then',
                  "        " + img_cmd(cmds, '"blkdebug:$RULES:$IMG"'),
                  "    else",
                  '        ' + penv + 'LD_PRELOAD="$SO" BLKFAULT_CONFIG="$RULES" BLKFAULT_IMAGE=' + img_env(cmds)
                  + " " + img_cmd(cmds, '"$IMG"'),
                  "    fi",
                  '    echo "qemu-img rc=$?"']
            for a in cmds:  # normalise_new_header, by hand: only where the rebase switched
                if a.startswith(NEW_PREFIX):
                    n = a[len(NEW_PREFIX):]
                    L += [f'    qemu-img info "$IMG" | grep -q "^backing file: .*{n}" && '
                          f'qemu-img rebase -u -f qcow2 -b {q(n)} -F qcow2 "$IMG"   # header normalised']
            continue
        cs = _io_args(cmds, q)
        L += ['    if [ "$1" = reference ]; then',
              f'        qemu-io -f qcow2 {cs} "blkdebug:$RULES:$IMG"',
              "    else",
              f'        {penv}LD_PRELOAD="$SO" BLKFAULT_CONFIG="$RULES" BLKFAULT_IMAGE="$IMG" '
              f'qemu-io -f qcow2 {cs} "$IMG"',
              "    fi",
              '    echo "qemu-io rc=$?"']
    L += ['    qemu-img check -f qcow2 "$IMG"; echo "check rc=$?"',
          "}",
          'echo "=== reference (blkdebug)"; run reference',
          'echo "=== subject (LD_PRELOAD)"; run subject',
          'echo "=== bytes"; cmp "$W/reference/t.qcow2" "$W/subject/t.qcow2" '
          '&& echo "images identical"',
          *(f'cmp "$W/reference/{n}" "$W/subject/{n}" && echo "{n} identical"'
            for n in getattr(wl, "hash_files", ())),
          'if [ -z "${KEEP:-}" ]; then rm -rf "$W"; else echo "kept $W"; fi',
          ""]
    return "\n".join(L)


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------

def summarise(results: list[CaseResult]):
    events: dict[str, dict] = {}
    order = scenarios.MATRIX_EVENTS + ["chain"]
    for r in results:
        e = events.setdefault(r.case.event, dict(cases=0, inject=0, noinj=0, out=0,
                                                 check=0, bytes=0, all=0, noinj_all=0,
                                                 inject_all=0, flush_latch=0,
                                                 flush_latch_diff=0, errors=0,
                                                 decidable=0, decidable_all=0))
        e["cases"] += 1
        if r.kind == "error":
            e["errors"] += 1
            continue
        e["inject" if r.kind == "inject" else "noinj"] += 1
        e["out"] += r.same_output
        e["check"] += r.same_check
        e["bytes"] += r.same_bytes
        e["all"] += r.identical
        if r.kind == "inject":
            e["inject_all"] += r.identical
        else:
            e["noinj_all"] += r.identical
        if "flush-latch" in r.tags:
            e["flush_latch"] += 1
            e["flush_latch_diff"] += not r.identical
        if r.kind == "inject" and "flush-latch" not in r.tags and "undecidable" not in r.tags:
            e["decidable"] += 1
            e["decidable_all"] += r.identical
    keys = sorted(events, key=lambda k: (order.index(k) if k in order else 999, k))
    tot = {k: sum(events[e][k] for e in events) for k in
           ("cases", "inject", "noinj", "out", "check", "bytes", "all", "noinj_all",
            "inject_all", "flush_latch", "flush_latch_diff", "errors", "decidable",
            "decidable_all")}
    # error cases count as failures in both percentages' denominators
    tot["noinj_pct"] = 100.0 * tot["noinj_all"] / tot["noinj"] if tot["noinj"] else 100.0
    tot["inject_pct"] = (100.0 * tot["inject_all"] / tot["inject"]) if tot["inject"] else 100.0
    # for information: inject parity when the
    # flush-latch cases, an inherent difference of the preload approach, are left out
    n = tot["inject"] - tot["flush_latch"]
    ok = tot["inject_all"] - (tot["flush_latch"] - tot["flush_latch_diff"])
    tot["inject_nolatch"], tot["inject_nolatch_all"] = n, ok
    tot["inject_nolatch_pct"] = 100.0 * ok / n if n else 100.0
    # the figure the exit status uses: inject cases blkfault can decide from outside
    # (neither flush-latch nor listed in scenarios.UNDECIDABLE)
    tot["decidable_pct"] = (100.0 * tot["decidable_all"] / tot["decidable"]
                            if tot["decidable"] else 100.0)
    return {k: events[k] for k in keys}, tot


COLS = [("cases", "cases"), ("inject", "inject"), ("out", "same output"),
        ("check", "same check"), ("bytes", "same bytes"), ("all", "all identical"),
        ("inject_all", "inject identical"), ("flush_latch", "flush-latch"),
        ("decidable", "decidable inject"), ("decidable_all", "decidable identical")]


def human_table(events, tot) -> str:
    w = max(len(k) for k in list(events) + ["TOTAL"])
    hdr = f"{'event':<{w}}  " + "  ".join(f"{h:>{max(len(h), 6)}}" for _, h in COLS)
    lines = [hdr, "-" * len(hdr)]
    for k, e in list(events.items()) + [("TOTAL", tot)]:
        if k == "TOTAL":
            lines.append("-" * len(hdr))
        lines.append(f"{k:<{w}}  " + "  ".join(f"{e[c]:>{max(len(h), 6)}}" for c, h in COLS))
    return "\n".join(lines)


def markdown_table(events, tot, meta) -> str:
    L = [f"Parity of blkfault against QEMU {meta['qemu']} blkdebug "
         f"(subject: {meta['subject']}, {tot['cases']} cases, {meta['set']} set, "
         f"{meta['elapsed']:.0f} s).", "",
         "| event | " + " | ".join(h for _, h in COLS) + " |",
         "|---|" + "---:|" * len(COLS)]
    for k, e in events.items():
        L.append(f"| `{k}` | " + " | ".join(str(e[c]) for c, _ in COLS) + " |")
    L.append("| **total** | " + " | ".join(f"**{tot[c]}**" for c, _ in COLS) + " |")
    L += ["", f"No-injection parity: {tot['noinj_all']}/{tot['noinj']} "
              f"({tot['noinj_pct']:.1f}%). Inject parity (output, check and bytes all "
              f"identical): {tot['inject_all']}/{tot['inject']} ({tot['inject_pct']:.1f}%).",
          f"flush-latch: cases whose first injected failure is a flush "
          f"({tot['flush_latch']}, of which {tot['flush_latch_diff']} differ; inject parity "
          f"without them {tot['inject_nolatch_all']}/{tot['inject_nolatch']}, "
          f"{tot['inject_nolatch_pct']:.1f}%); see "
          f"Tests/parity/README.md.",
          f"Decidable inject parity (inject cases that are neither flush-latch nor listed "
          f"as undecidable in Tests/parity/scenarios.py): {tot['decidable_all']}/"
          f"{tot['decidable']} ({tot['decidable_pct']:.1f}%).", ""]
    return "\n".join(L)


def qemu_version() -> str:
    try:
        p = subprocess.run([QEMU_IO, "--version"], stdout=subprocess.PIPE, text=True)
        m = re.search(r"version (\S+)", p.stdout)
        return m.group(1) if m else "?"
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# iotest 026 reproduction
# --------------------------------------------------------------------------

def filter_create(text: str, run_dir: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = re.match(r"Formatting '([^']*)', fmt=(\S+)(.*)$", line)
        if not m:
            out.append(line)
            continue
        name = m.group(1).replace(run_dir.rstrip("/") + "/", "TEST_DIR/")
        name = re.sub(r"\.qcow2$", ".IMGFMT", name)
        keep = [o for o in m.group(3).split()
                if o.split("=")[0] in ("size", "backing_file", "backing_fmt")]
        out.append(f"Formatting '{name}', fmt=IMGFMT " + " ".join(keep))
    return out


CHECK_DROP = re.compile(r"allocated.*fragmented.*compressed clusters|Image end offset: [0-9]+")


def run_026_case(runner: Runner, c: scenarios.Case026, idx: int, work: str, keep: bool):
    d = os.path.join(work, "026", f"{idx:03d}")
    os.makedirs(d, exist_ok=True)
    img = os.path.join(d, IMG_NAME)
    cfg = os.path.join(d, "blkdebug.conf")
    Path(cfg).write_text(c.rules)
    out = []
    p = runner.create(img, c.cluster_size, c.size)
    out += filter_create(p.stdout, d)
    if c.header:
        out += ["", c.header]

    def io_lines(p):
        # stdout is a pipe in 026 (| _filter_qemu_io), flushed only at exit, while
        # error_report() writes unbuffered to stderr: stderr comes first.
        lines = p.stderr.splitlines()
        lines += normalise(p.stdout, d, cfg).splitlines()
        if not isinstance(p.rc, int):
            lines.append(f"[harness] qemu-io {p.rc}")
        return lines

    for cmds in c.pre:
        p = runner.qemu_io("plain", cmds, img, None)
        if not c.pre_silent:
            out += io_lines(p)
    for cmds in c.runs:
        p = runner.qemu_io("subject", cmds, img, cfg)
        out += io_lines(p)
    p = runner.check(img)
    text = normalise(p.stdout, d, None)
    lines = [ln for ln in text.splitlines() if not CHECK_DROP.search(ln)]
    if c.ignore_leaks:
        if p.rc == 3:
            lines = ["No errors were found on the image."]
        else:
            # out=$(...) strips trailing newlines; echo "$out" prints at least one line
            lines = "\n".join(lines).rstrip("\n").split("\n")
        lines = [ln for ln in lines if "refcount=1 reference=0" not in ln]
    out += lines
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


def blocks_of(lines: list[str]) -> list[list[str]]:
    """Split a 026 transcript into case blocks (each starts at a Formatting line)."""
    blocks, cur = [], None
    for ln in lines:
        ln = ln.rstrip()
        if ln.startswith("Formatting '"):
            if cur is not None:
                blocks.append(cur)
            cur = [ln]
        elif cur is not None:
            if ln.startswith("=== ") or ln == "*** done":
                continue
            cur.append(ln)
    if cur is not None:
        blocks.append(cur)
    return [b[:len(b) - next((i for i, x in enumerate(reversed(b)) if x), 0)] for b in blocks]


def transcript_026(args, runner: Runner, cases) -> list[str]:
    """Runs iotest 026's cases through `runner` and returns the transcript 026 prints."""
    runner.qemu_io_args = ["--cache", "writeback", "--aio", "threads", "-f", "qcow2",
                           "--cache", "writethrough"]  # what 026 passes ($QEMU_IO)
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futs = [ex.submit(run_026_case, runner, c, i, args.workdir, bool(args.keep))
                for i, c in enumerate(cases)]
        blocks = [f.result() for f in futs]
    tr = ["QA output created by 026"]
    section = None
    for c, b in zip(cases, blocks):
        if c.section != section:
            if section is not None:
                tr.append("")
            tr += [scenarios.SECTION_TITLES[c.section], ""]
            section = c.section
        tr += b
    tr.append("*** done")
    return tr


def run_026(args, runner: Runner) -> int:
    t0 = time.monotonic()
    cases = scenarios.cases_026()
    tr = transcript_026(args, runner, cases)
    elapsed = time.monotonic() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tfile = out / "026.out.subject"
    tfile.write_text("\n".join(tr) + "\n")
    print(f"026 transcript ({runner.subject} subject, {len(cases)} cases, "
          f"{elapsed:.1f} s): {tfile}")
    exp_path = Path(os.environ.get("PARITY_026_OUT") or REPO_ROOT.parent / "shared" / "notes"
                    / "026.out")
    if not exp_path.is_file():
        # Without QEMU's 026.out (it is not part of this repository), real blkdebug
        # running the same cases is the expectation: what 026.out records.
        print(f"expected output {exp_path} not found (set PARITY_026_OUT): "
              "comparing with real blkdebug running the same cases")
        ref = Runner("blkdebug", None, runner.timeout)
        exp_lines = transcript_026(args, ref, cases)
        exp_path = out / "026.out.blkdebug"
        exp_path.write_text("\n".join(exp_lines) + "\n")
    exp = [ln.rstrip() for ln in exp_path.read_text().splitlines()]
    got = [ln.rstrip() for ln in tr]
    diff = list(difflib.unified_diff(exp, got, str(exp_path), str(tfile), lineterm=""))
    (out / "026.diff").write_text("\n".join(diff) + ("\n" if diff else ""))
    eb, gb = blocks_of(exp), blocks_of(got)
    match = sum(1 for a, b in zip(eb, gb) if a == b)
    bad = [i for i, (a, b) in enumerate(zip(eb, gb)) if a != b]
    print(f"case blocks matching {exp_path.name}: {match}/{len(eb)}"
          + (f" (subject produced {len(gb)} blocks)" if len(gb) != len(eb) else ""))
    unexplained = []
    for i in bad:
        hdr = next((x for x in eb[i] if x.startswith("Event:")), eb[i][0])
        event = hdr.split(";")[0].removeprefix("Event: ").strip()
        reason = scenarios.UNDECIDABLE_026.get(event)
        if reason is None:
            unexplained.append(i)
        if i in bad[:20]:
            print(f"  block {i + 1}: {hdr}" + (f"  [undecidable: {reason}]" if reason else ""))
    if len(bad) > 20:
        print(f"  ... {len(bad) - 20} more")
    print(f"blocks differing for a reason other than a listed undecidable event: {len(unexplained)}")
    print("whole transcript identical to 026.out (trailing blanks ignored)" if not diff
          else f"diff: {out / '026.diff'} ({len(diff)} lines)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "mode": "026", "subject": runner.subject, "elapsed": elapsed,
            "blocks_total": len(eb), "blocks_matching": match,
            "mismatching_blocks": [i + 1 for i in bad],
            "unexplained_blocks": [i + 1 for i in unexplained],
            "identical": not diff}, indent=2) + "\n")
    # the exit status: every block identical, or differing only for a listed reason
    return 0 if not unexplained and len(gb) == len(eb) else 1


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def die(msg: str):
    """Usage/setup errors exit with status 2 (1 means: parity not reached)."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def find_so(explicit: str | None) -> str:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            die(f"parity: --so {explicit}: no such file")
        return str(p.resolve())
    cands = []
    for sub in ("debug", "release"):
        cands += [REPO_ROOT / ".build" / sub / "libblkfault.so"]
        cands += list((REPO_ROOT / ".build").glob(f"*/{sub}/libblkfault.so"))
    cands = [c for c in cands if c.is_file()]
    if not cands:
        die("parity: libblkfault.so not found under .build/debug or .build/release "
                 f"(looked in {REPO_ROOT / '.build'}).\n"
                 "Build it first (swift build [-c release]) or pass --so PATH; "
                 "to test the harness itself use PARITY_SUBJECT=blkdebug.")
    newest = max(cands, key=lambda c: c.stat().st_mtime)
    return str(newest.resolve())


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="blkfault parity harness: compare the LD_PRELOAD subject with "
                    "real QEMU blkdebug (qemu-io output, qemu-img check, image bytes).")
    ap.add_argument("--so", help="path of libblkfault.so (default: newest under "
                                 ".build/{debug,release} of the repo)")
    ap.add_argument("--subject", choices=("preload", "blkdebug", "plain"),
                    default=os.environ.get("PARITY_SUBJECT", "preload"),
                    help="what the subject run uses (default: $PARITY_SUBJECT or preload); "
                         "blkdebug/plain test the harness itself")
    ap.add_argument("--full", action="store_true",
                    help="whole cross product events x errno x once x immediately x workloads")
    ap.add_argument("--gaps", action="store_true",
                    help="only the workloads of scenarios.GAP_WORKLOADS (snapshots, backing "
                         "files, check -r, convert, resize grow), left out of the default set")
    ap.add_argument("--026", dest="t026", action="store_true",
                    help="reproduce qemu-iotests 026 through the subject and diff with 026.out")
    ap.add_argument("--filter", action="append", default=[], metavar="EVENT",
                    help="only cases for EVENT (repeatable or comma-separated; "
                         "'chain' selects the set-state chain cases)")
    ap.add_argument("--case", action="append", default=[], metavar="SUBSTR",
                    help="only cases whose id contains SUBSTR (repeatable)")
    ap.add_argument("--no-chains", action="store_true", help="skip the chain cases")
    ap.add_argument("--sample", metavar="K/N", type=parse_sample,
                    help="only the cases whose id hashes to K modulo N (sha256 of the id): "
                         "K=0..N-1 give disjoint slices whose union is the whole selection")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallel cases (default 2)")
    ap.add_argument("--keep", metavar="DIR",
                    help="work in DIR and keep all images and outputs there")
    ap.add_argument("--out", default=str(REPO_ROOT / "parity-out"),
                    help="where differing-case directories (diffs/<case>/) and the 026 "
                         "transcript go (default: <repo>/parity-out)")
    ap.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="write the summary table as Markdown")
    ap.add_argument("--min-inject", type=float, default=90.0,
                    help="required inject parity in percent (default 90)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="timeout per qemu process in seconds (default 300)")
    ap.add_argument("--no-strace", action="store_true",
                    help="skip the traced reference run that finds the first injected "
                         "failure (and so the flush-latch cases)")
    ap.add_argument("--list", action="store_true", help="list the selected cases and exit")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every case")
    return ap.parse_args(argv)


def parse_sample(text: str) -> tuple[int, int]:
    """`K/N` with 0 <= K < N, for --sample."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/40") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= K < N")
    return k, n


def in_sample(case_id: str, k: int, n: int) -> bool:
    """A stable hash (not Python's salted hash()): the same slice on every run and machine."""
    digest = hashlib.sha256(case_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == k


def select_cases(args) -> list[Case]:
    cases = scenarios.matrix_cases(args.full, args.gaps)
    if not args.no_chains and not args.gaps:
        cases += scenarios.chain_cases()
    evs = {e for f in args.filter for e in f.split(",") if e}
    if evs:
        known = set(scenarios.MATRIX_EVENTS) | {"chain"}
        unknown = evs - known
        if unknown:
            die(f"parity: --filter: unknown event(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(sorted(known))}")
        cases = [c for c in cases if c.event in evs]
    if args.case:
        cases = [c for c in cases if any(s in c.id for s in args.case)]
    if args.sample:
        cases = [c for c in cases if in_sample(c.id, *args.sample)]
    return cases


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in (QEMU_IO, QEMU_IMG):
        if not shutil.which(tool):
            die(f"parity: {tool} not found in PATH")
    # --list needs no library: the case list does not depend on it.
    so = find_so(args.so) if args.subject == "preload" and not args.list else (args.so or None)
    runner = Runner(args.subject, so, args.timeout)
    if args.keep:
        args.workdir = str(Path(args.keep).resolve())
        os.makedirs(args.workdir, exist_ok=True)
    else:
        args.workdir = tempfile.mkdtemp(prefix="blkfault-parity-", dir="/tmp")
    try:
        if args.t026:
            return run_026(args, runner)
        return run_matrix(args, runner)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


def run_matrix(args, runner: Runner) -> int:
    cases = select_cases(args)
    if args.list:
        for c in cases:
            print(f"{c.id}\t{c.workload.key}\t{c.workload.desc}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    if not cases and args.gaps and not args.full:
        # Every gap workload and pair has been moved into the default set (or listed as
        # undecidable there): nothing falls short any more.
        print("parity: no gap cases left (scenarios.GAP_WORKLOADS, S3C_GAPS and S3C_GAP_PAIRS are empty)")
        return 0
    if not cases:
        die("parity: no case selected")
    h = Harness(args, runner)
    t0 = time.monotonic()
    wls = {c.workload.key: c.workload for c in cases}
    print(f"parity: {len(cases)} cases over {len(wls)} workloads, subject={runner.subject}"
          + (f" ({runner.so})" if runner.so else "") + f", jobs={args.jobs}, "
          f"work dir {args.workdir}", file=sys.stderr, flush=True)
    diffs = Path(args.out) / "diffs"
    if diffs.exists():
        shutil.rmtree(diffs)
    with cf.ThreadPoolExecutor(args.jobs) as ex:
        wl_sorted = sorted(wls.values(), key=lambda w: -w.cost)
        for w, r in zip(wl_sorted, ex.map(h.baseline, wl_sorted)):
            h.baselines[w.key] = r
        # longest first (refcount-growth workloads), so the pool ends evenly
        order = sorted(cases, key=lambda c: -c.workload.cost)
        h.total = len(order)
        results = list(ex.map(h.run_case, order))
    elapsed = time.monotonic() - t0
    pos = {c.id: i for i, c in enumerate(cases)}
    results.sort(key=lambda r: pos[r.case.id])
    events, tot = summarise(results)
    meta = {"qemu": qemu_version(), "subject": runner.subject, "so": runner.so,
            "set": "full" if args.full else "gaps" if args.gaps else "default", "elapsed": elapsed,
            "filter": args.filter, "case": args.case, "jobs": args.jobs,
            "sample": "%d/%d" % args.sample if args.sample else None}

    print()
    print(human_table(events, tot))
    print()
    print(f"no-injection parity: {tot['noinj_all']}/{tot['noinj']} = {tot['noinj_pct']:.1f}% "
          "(required 100%)")
    print(f"inject parity:       {tot['inject_all']}/{tot['inject']} = {tot['inject_pct']:.1f}% "
          "(all inject cases, raw)")
    print(f"flush-latch cases:   {tot['flush_latch']} ({tot['flush_latch_diff']} differing); "
          f"inject parity without them: {tot['inject_nolatch_all']}/{tot['inject_nolatch']} = "
          f"{tot['inject_nolatch_pct']:.1f}% (information only)")
    print(f"decidable inject:    {tot['decidable_all']}/{tot['decidable']} = "
          f"{tot['decidable_pct']:.1f}% (required >= {args.min_inject:g}%; neither "
          "flush-latch nor undecidable)")
    if tot["errors"]:
        print(f"harness errors:      {tot['errors']}")
    bad = [r for r in results if not r.identical]
    if bad:
        print(f"\n{len(bad)} differing case(s), details under {diffs}:")
        for r in bad[:40]:
            what = r.error or ("output " if not r.same_output else "") + \
                ("check " if not r.same_check else "") + ("bytes" if not r.same_bytes else "")
            tags = f" [{','.join(r.tags)}]" if r.tags else ""
            print(f"  {r.case.id} ({r.kind}): {what.strip()}{tags}")
        if len(bad) > 40:
            print(f"  ... {len(bad) - 40} more")
    print(f"\n{len(results)} cases in {elapsed:.1f} s")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "meta": meta, "totals": tot, "events": events,
            "cases": [{
                "id": r.case.id, "event": r.case.event, "group": r.case.group,
                "workload": r.case.workload.key, "params": r.case.params,
                "rules": r.case.rules, "kind": r.kind, "same_output": r.same_output,
                "same_check": r.same_check, "same_bytes": r.same_bytes,
                "identical": r.identical, "tags": r.tags, "diff_dir": r.diff_dir,
                "first_failure": r.first_failure, "undecidable": r.undecidable,
                "seconds": round(r.seconds, 3), "error": r.error, "note": r.case.note,
                "reference_runs": [{"rc": x["rc"], "stdout": x["stdout"],
                                    "stderr": x["stderr"]} for x in r.ref.runs]
                if r.ref else None,
                "reference_check_rc": r.ref.check_rc if r.ref else None,
            } for r in results]}, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(events, tot, meta))
    ok = tot["noinj_pct"] >= 100.0 and tot["decidable_pct"] >= args.min_inject \
        and not tot["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
