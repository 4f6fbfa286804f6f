#!/usr/bin/env python3
"""Fidelity: blkfault changes nothing when no rule fires.

Each case is a seeded random workload over a random qcow2 geometry: a few qemu-io runs
(read, write -P, writev, readv, discard, write -z, write -c, flush, truncate, aio_write +
aio_flush, map) with qemu-img snapshot -c/-a/-d between runs, ending with qemu-img check.
It runs twice on fresh images: plainly, and under libblkfault.so with a rule file whose
rules are loaded but can never fire (states never reached, a sector past the end) and a
trace. Every program's output and exit status, and the image bytes after every step,
must be identical; the trace must show no failed request.

  python3 Tests/fidelity/fidelity.py --so .build/debug/libblkfault.so [--cases 1000]
      [--first 0] [--jobs 1] [--keep DIR] [--show N] [--untraced]

--untraced: the preloaded side runs without a trace, as a user's would, so guest data
requests go through the steady pre-filter (BLKFAULT_STATS counts them instead).

Exit status 1 when any case differs; each difference is printed with its seed and a
shell script that reproduces it is written to the run directory.
"""
import argparse, concurrent.futures, hashlib, json, os, random, re, shutil, struct, subprocess, sys, tempfile, time

QEMU_IO = os.environ.get("QEMU_IO_PROG", "qemu-io")
QEMU_IMG = os.environ.get("QEMU_IMG_PROG", "qemu-img")
TIMING_RE = re.compile(
    r"[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*/sec and [0-9/.inf]* ops/sec\)")

# Loaded, parsed, and never fired: state 1 never reaches 2..9, and no request covers a
# sector past 2^40 bytes. One rule per event family the engine recognises, so that the
# whole classifier runs.
NEVER_FIRING = "".join(
    f'[inject-error]\nevent = "{e}"\nstate = "{7 + i % 3}"\nerrno = "5"\nonce = "off"\n\n'
    for i, e in enumerate(["l1_update", "l2_load", "l2_update", "l2_alloc_write", "write_aio", "read_aio",
                           "refblock_load", "refblock_alloc", "refblock_update_part", "cluster_alloc",
                           "cluster_free", "flush_to_os", "flush_to_disk", "pwritev", "pwritev_zero",
                           "reftable_grow", "l1_grow_write_table", "write_compressed", "none"])
) + (
    '[set-state]\nevent = "write_aio"\nstate = "4"\nnew_state = "7"\n\n'
    '[set-state]\nevent = "l2_load"\nstate = "5"\nnew_state = "8"\n\n'
    '[inject-error]\nevent = "pwritev"\nsector = "4294967296"\nerrno = "28"\nonce = "off"\n\n'
    '[inject-error]\nevent = "read_aio"\nsector = "4294967296"\nerrno = "5"\niotype = "read"\n'
)

CLUSTER_SIZES = [512, 1024, 2048, 4096, 16384, 65536, 262144, 2 << 20]
REFCOUNT_BITS = [1, 2, 4, 8, 16, 32, 64]


def geometry(rng):
    cs = rng.choice(CLUSTER_SIZES)
    compat = rng.choice(["1.1", "1.1", "0.10"])
    opts = {"cluster_size": cs, "compat": compat}
    if compat == "1.1":
        opts["refcount_bits"] = rng.choice(REFCOUNT_BITS)
        if rng.random() < 0.3:
            opts["lazy_refcounts"] = "on"
        if cs >= 16384 and rng.random() < 0.3:
            opts["extended_l2"] = "on"
    size = rng.choice([1, 4, 16, 64, 256]) << 20
    size = max(size, 4 * cs)
    return opts, size


def random_command(rng, size, cs):
    """One qemu-io command; offsets and lengths mix aligned and byte-granular ones."""
    def extent(limit=None):
        limit = limit or min(size, 8 * cs, 4 << 20)
        if rng.random() < 0.6:
            unit = rng.choice([512, 4096, cs])
            off = rng.randrange(0, max(1, size // unit)) * unit
            ln = unit * rng.randint(1, max(1, limit // unit))
        else:
            off = rng.randrange(0, size)
            ln = rng.randint(1, limit)
        ln = max(1, min(ln, size - off)) if off < size else 1
        return off, ln
    pat = rng.randrange(256)
    kind = rng.choices(
        ["read", "readP", "write", "writev", "readv", "discard", "writez", "writezu", "writec",
         "flush", "truncate", "aio", "map"],
        [10, 6, 22, 6, 3, 6, 6, 3, 4, 6, 2, 6, 2])[0]
    off, ln = extent()
    if kind == "read":
        return f"read {off} {ln}"
    if kind == "readP":
        return f"read -P 0x{pat:x} {off} {ln}"
    if kind == "write":
        return f"write -P 0x{pat:x} {off} {ln}"
    if kind in ("writev", "readv"):
        parts = [rng.randint(1, 8) * 512 for _ in range(rng.randint(2, 4))]
        off = (off // 512) * 512
        flag = f"-P 0x{pat:x} " if kind == "writev" or rng.random() < 0.5 else ""
        return f"{kind} {flag}{off} " + " ".join(map(str, parts))
    if kind == "discard":
        return f"discard {off} {ln}"
    if kind == "writez":
        return f"write -z {off} {ln}"
    if kind == "writezu":
        return f"write -z -u {off} {ln}"
    if kind == "writec":
        c = rng.randrange(0, max(1, size // cs))
        # One cluster: QEMU compresses the clusters of a longer request in parallel and
        # allocates them in completion order, which differs from run to run.
        return f"write -c -P 0x{pat:x} {c * cs} {cs}"
    if kind == "flush":
        return "flush"
    if kind == "truncate":
        return f"truncate {rng.choice([size, size + cs, size * 2, max(cs, size // 2)])}"
    if kind == "aio":
        # One request in flight at a time: concurrent allocating requests may be ordered
        # differently by QEMU's thread pool from run to run, with or without blkfault.
        return [f"aio_write -P 0x{pat:x} {off} {ln}", "aio_flush"]
    return "map"


def make_case(seed):
    rng = random.Random(seed)
    opts, size = geometry(rng)
    cs = opts["cluster_size"]
    steps = [("create", opts, size)]
    snaps = []
    for run in range(rng.randint(1, 3)):
        if run and rng.random() < 0.6:
            what = rng.choice(["c", "c", "a", "d", "l"]) if snaps else "c"
            if what == "c":
                snaps.append(f"s{run}")
                steps.append(("snapshot", ["-c", snaps[-1]]))
            elif what == "l":
                steps.append(("snapshot", ["-l"]))
            else:
                steps.append(("snapshot", [f"-{what}", rng.choice(snaps)]))
                if what == "d":
                    snaps.remove(steps[-1][1][1])
        cmds = []
        for _ in range(rng.randint(1, 12)):
            c = random_command(rng, size, cs)
            cmds += c if isinstance(c, list) else [c]
        cache = rng.choice(["writeback", "writeback", "writethrough", "none"])
        steps.append(("io", cmds, cache))
    steps.append(("check",))
    return steps


def run(argv, env, timeout=120):
    try:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return "timeout", "", ""


def argv_of(step, img):
    if step[0] == "create":
        opts = ",".join(f"{k}={v}" for k, v in step[1].items())
        return [QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, img, str(step[2])]
    if step[0] == "snapshot":
        return [QEMU_IMG, "snapshot", *step[1], img]
    if step[0] == "io":
        argv = [QEMU_IO, "-f", "qcow2", "-t", step[2]]
        for c in step[1]:
            argv += ["-c", c]
        return argv + [img]
    return [QEMU_IMG, "check", img]


SNAPSHOT_DATE_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def without_snapshot_dates(b):
    """The image with each snapshot's creation time (date_sec, date_nsec) zeroed: the
    only bytes that differ between two runs of the same commands."""
    if len(b) < 72 or b[:4] != b"QFI\xfb":
        return b
    count = struct.unpack(">I", b[60:64])[0]
    pos = struct.unpack(">Q", b[64:72])[0]
    b = bytearray(b)
    for _ in range(min(count, 1000)):
        if pos + 40 > len(b):
            break
        b[pos + 16:pos + 24] = bytes(8)
        id_len, name_len = struct.unpack(">HH", b[pos + 12:pos + 16])
        extra = struct.unpack(">I", b[pos + 36:pos + 40])[0]
        pos += (40 + extra + id_len + name_len + 7) // 8 * 8
    return bytes(b)


def digest(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(without_snapshot_dates(f.read())).hexdigest()
    except FileNotFoundError:
        return "missing"


STATS_RE = re.compile(r"^blkfault: stats: .*: (\d+) requests let through by the steady pre-filter\n", re.M)
skipped_total = [0]   # --untraced: requests the steady pre-filter let through, all cases


def execute(steps, workdir, so, untraced=False):
    """Runs the steps on a fresh image in workdir; returns one record per step.
    untraced: the preloaded side has no trace (so the steady pre-filter is on) and
    BLKFAULT_STATS instead, whose lines are taken out of the output and counted."""
    img = os.path.join(workdir, "t.qcow2")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("BLKFAULT_")}
    env.update(LC_ALL="C", LANG="C")
    trace = os.path.join(workdir, "trace.jsonl")
    if so:
        cfg = os.path.join(workdir, "never.cfg")
        with open(cfg, "w") as f:
            f.write(NEVER_FIRING)
        env.update(LD_PRELOAD=so, BLKFAULT_CONFIG=cfg, BLKFAULT_IMAGE=img, BLKFAULT_TRACE=trace)
        if untraced:
            del env["BLKFAULT_TRACE"]
            env["BLKFAULT_STATS"] = "1"
    records = []
    followed = False
    for step in steps:
        rc, out, err = run(argv_of(step, img), env)
        if so and untraced:
            counts = [int(n) for n in STATS_RE.findall(err)]
            followed = followed or bool(counts)
            skipped_total[0] += sum(counts)
            err = STATS_RE.sub("", err)
        text = TIMING_RE.sub("TIMING", (out + "\x00" + err).replace(workdir, "DIR"))
        text = SNAPSHOT_DATE_RE.sub("DATE", text)
        records.append((rc, text, digest(img)))
    fired = 0
    if so and untraced:
        return records, 0 if followed else -1
    if so:
        if not os.path.exists(trace) or os.path.getsize(trace) == 0:
            fired = -1   # the preload followed nothing: the comparison would prove nothing
            return records, fired
        with open(trace) as f:
            for line in f:
                entry = json.loads(line)
                if entry.get("action", "pass") != "pass" or "rule_line" in entry \
                        or entry.get("state_after", 1) != 1:
                    fired += 1
    return records, fired


def describe(step):
    if step[0] == "create":
        return "qemu-img create -o " + ",".join(f"{k}={v}" for k, v in step[1].items()) + f" {step[2]}"
    if step[0] == "snapshot":
        return "qemu-img snapshot " + " ".join(step[1])
    if step[0] == "io":
        return f"qemu-io -t {step[2]} " + " ".join(f"-c '{c}'" for c in step[1])
    return "qemu-img check"


rerun_matched = []   # seeds whose preloaded run equalled only a plain rerun


def run_case(seed, so, base, untraced=False):
    steps = make_case(seed)
    d = tempfile.mkdtemp(prefix=f"case{seed}-", dir=base)
    plain_dir, pre_dir = os.path.join(d, "plain"), os.path.join(d, "preload")
    os.mkdir(plain_dir); os.mkdir(pre_dir)
    plain, _ = execute(steps, plain_dir, None)
    pre, fired = execute(steps, pre_dir, so, untraced)
    reruns = 0
    while plain != pre and reruns < 2:
        # QEMU itself is not always deterministic (e.g. the order of concurrent chunk
        # writes): the preloaded run passes if it equals any plain run.
        reruns += 1
        again_dir = os.path.join(d, f"plain{reruns + 1}")
        os.mkdir(again_dir)
        again, _ = execute(steps, again_dir, None)
        if again == pre:
            plain = again
            rerun_matched.append(seed)
    problems = []
    for i, (step, a, b) in enumerate(zip(steps, plain, pre)):
        what = []
        if a[0] != b[0]:
            what.append(f"exit {a[0]} vs {b[0]}")
        if a[1] != b[1]:
            what.append("output differs:\n  plain:   " + a[1].replace("\n", "\n           ")
                        + "\n  preload: " + b[1].replace("\n", "\n           "))
        if a[2] != b[2]:
            what.append("image bytes differ")
        if what:
            problems.append(f"step {i} `{describe(step)}`: " + "; ".join(what))
    if fired < 0:
        problems.append("the preloaded run left no trace (or, untraced, no stats line): blkfault did not follow the image")
    elif fired:
        problems.append(f"the trace shows {fired} request(s) failed by a rule that can never fire")
    if not problems:
        shutil.rmtree(d, ignore_errors=True)
    else:
        with open(os.path.join(d, "steps.txt"), "w") as f:
            f.write("\n".join(describe(s) for s in steps) + "\n")
    return seed, steps, problems, d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--so", required=True)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--keep", help="directory for failing cases (default: a temporary one)")
    ap.add_argument("--untraced", action="store_true",
                    help="no trace on the preloaded side (the steady pre-filter is on then; "
                         "BLKFAULT_STATS shows it followed the image)")
    args = ap.parse_args()
    so = os.path.abspath(args.so)
    if not os.path.exists(so):
        sys.exit(f"{so}: not found")
    base = args.keep or tempfile.mkdtemp(prefix="fidelity-")
    os.makedirs(base, exist_ok=True)
    t0 = time.time()
    failed, ops, geometries = [], 0, set()
    seeds = range(args.first, args.first + args.cases)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for seed, steps, problems, d in pool.map(lambda s: run_case(s, so, base, args.untraced), seeds):
            ops += sum(len(s[1]) if s[0] == "io" else 1 for s in steps)
            geometries.add(tuple(sorted(steps[0][1].items())))
            if problems:
                failed.append(seed)
                print(f"case {seed} DIFFERS ({d}):")
                for p in problems:
                    print("  " + p)
    print(f"fidelity: {args.cases - len(failed)}/{args.cases} cases identical (seeds {args.first}.."
          f"{args.first + args.cases - 1}, {ops} commands, {len(geometries)} geometries, "
          f"{time.time() - t0:.0f} s)")
    if args.untraced:
        print(f"  untraced: {skipped_total[0]} requests were let through by the steady pre-filter")
    if rerun_matched:
        print(f"  {len(rerun_matched)} of them equal a second plain run but not the first (QEMU itself "
              f"differed between two plain runs): seeds " + " ".join(map(str, sorted(rerun_matched))))
    if failed:
        print("differing seeds: " + " ".join(map(str, failed)))
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
