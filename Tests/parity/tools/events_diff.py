#!/usr/bin/env python3
"""Which events blkfault raises where real blkdebug raises others, I/O by I/O.

Runs CMD on two copies of SRCIMG: through real blkdebug under gdb
(blkdebug_events.py) and under the preload with BLKFAULT_TRACE, and prints a unified
diff of `events | I/O` lines (pwritev/pwritev_zero/pwritev_done left out). In CMD,
BDIMG is the image (blkdebug::IMAGE for the reference), IMG the bare image. A
base.qcow2 or src.qcow2 next to SRCIMG is copied along. A developer's tool: needs gdb.

--windows prints instead, for long runs whose data writes fall with timing, each
event's totals and the windows between l1_update events whose counts of cluster_alloc,
refblock_alloc, refblock_load, l2_alloc_write differ (write_aio left out).

usage: SO=.build/debug/libblkfault.so events_diff.py SRCIMG [--raw|--windows] -- CMD...
e.g.   events_diff.py t.qcow2 -- qemu-img snapshot -d s1 BDIMG"""
import collections, json, os, re, shutil, subprocess, sys, difflib, tempfile
SO = os.path.abspath(os.environ.get("SO", ".build/debug/libblkfault.so"))
TRACER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blkdebug_events.py")
i = sys.argv.index("--"); src = sys.argv[1]; cmd = sys.argv[i+1:]
opts = sys.argv[2:i]
W = tempfile.mkdtemp(prefix="blkfault-evdiff.")
for extra in ("base.qcow2", "base2.qcow2", "src.qcow2"):
    p = os.path.join(os.path.dirname(os.path.abspath(src)), extra)
    if os.path.exists(p): shutil.copy(p, W)
ref = os.path.join(W, "ref.qcow2"); sub = os.path.join(W, "sub.qcow2")
shutil.copy(src, ref); shutil.copy(src, sub)
SKIP = {"pwritev", "pwritev_done", "pwritev_zero"}
def squash(evs):
    res, k = [], 0
    while k < len(evs):
        for g in (2, 3, 1):
            grp = evs[k:k+g]; n = 1
            while len(grp) == g and evs[k+n*g:k+(n+1)*g] == grp: n += 1
            if n > 1:
                res.append("(" + " ".join(grp) + f")x{n}"); k += n*g; break
        else:
            res.append(evs[k]); k += 1
    return " ".join(res)
def norm_ops(lines):
    out, evs = [], []
    for l in lines:
        l = l.strip()
        m = re.match(r"\[(\w+)\](?:\s+\[(\w+)\])?\s+x(\d+)$", l)
        if m:
            for _ in range(int(m.group(3))):
                evs += [e for e in m.group(1, 2) if e and e not in SKIP]
            continue
        if l.startswith("["):
            e = l.strip("[]")
            if e not in SKIP: evs.append(e)
            continue
        m = re.match(r"(\w+)\(\d+(?:, (?:iov=)?(\d+) @(\d+))?.*?\)(?:\s+x(\d+))?", l)
        if m:
            op = m.group(1)
            kind = {"pread": "read", "preadv": "read", "pwrite": "write", "pwritev": "write", "fdatasync": "flush", "fsync": "flush", "fallocate": "fallocate"}.get(op, op)
            desc = kind if kind == "flush" else f"{kind} {m.group(2)} @{m.group(3)}"
            if kind == "fallocate":
                mm = re.match(r"fallocate\(\d+, mode=(\d+), @(\d+), (\d+)\)", l)
                desc = f"falloc{mm.group(1)} {mm.group(3)} @{mm.group(2)}"
            for _ in range(int(m.group(4) or 1)):
                out.append(f"{squash(evs):60s} | {desc}"); evs = []
    if evs: out.append(f"{squash(evs):60s} | (end)")
    return out
rc = [c.replace("BDIMG", "blkdebug::" + ref).replace("IMG", ref) for c in cmd]
r = subprocess.run([sys.executable, TRACER, ref, "--", *rc], capture_output=True, text=True, cwd=W)  # the copied src.qcow2 too
reflines = norm_ops(r.stdout.splitlines())
sc = [c.replace("BDIMG", sub).replace("IMG", sub) for c in cmd]
tr = os.path.join(W, "trace")
env = dict(os.environ, LD_PRELOAD=SO, BLKFAULT_TRACE=tr, BLKFAULT_IMAGE=sub)
s = subprocess.run(sc, env=env, capture_output=True, text=True, cwd=W)
sublines = []
for l in open(tr):
    j = json.loads(l)
    if "op" not in j or j["op"] == "stat": continue  # fstat: no blkdebug request
    evs = [e for e in j.get("events", []) if e not in SKIP]
    op = j["op"]
    kind = {"read": "read", "write": "write", "flush": "flush"}.get(op, op)
    if kind == "flush": desc = "flush"
    elif kind in ("discard",): desc = f"falloc3 {j['length']} @{j['offset']}"
    elif kind in ("write-zeroes", "writeZeroes", "write_zeroes"): desc = f"falloc16 {j['length']} @{j['offset']}"
    else: desc = f"{kind} {j['length']} @{j['offset']}"
    sublines.append(f"{squash(evs):60s} | {desc}")
def expand(evs):
    out = []
    for grp, n, one in re.findall(r"\(([^)]*)\)x(\d+)|(\S+)", evs):
        out += [one] if one else grp.split() * int(n)
    return out
def windows(lines):
    ws = [collections.Counter()]
    for l in lines:
        evs = [e for e in expand(l.split("|")[0]) if e != "write_aio"]
        ws[-1].update(evs)
        if "l1_update" in evs: ws.append(collections.Counter())
    return ws
if "--windows" in opts:
    tr, ts = sum(windows(reflines), collections.Counter()), sum(windows(sublines), collections.Counter())
    for e in sorted(set(tr) | set(ts)):
        print(f"{e:28s} blkdebug {tr[e]:6d}  blkfault {ts[e]:6d}{'' if tr[e] == ts[e] else '  DIFFERS'}")
    K = ("cluster_alloc", "refblock_alloc", "refblock_load", "l2_alloc_write")
    wr, ws = windows(reflines), windows(sublines)
    bad = [i for i, (a, b) in enumerate(zip(wr, ws)) if any(a[k] != b[k] for k in K)]
    for i in bad[:20]: print(f"window {i}:", {k: ws[i][k] - wr[i][k] for k in K if ws[i][k] != wr[i][k]})
    print(f"windows: {len(wr)} blkdebug, {len(ws)} blkfault, {len(bad)} differ in {', '.join(K)}")
    shutil.rmtree(W); sys.exit(0)
if "--raw" in opts:
    print("\n".join(reflines)); print("=====");  print("\n".join(sublines))
d = list(difflib.unified_diff(reflines, sublines, "blkdebug", "blkfault", n=2, lineterm=""))
print("\n".join(d) if d else "IDENTICAL (%d ops)" % len(reflines))
print("ref rc", r.returncode, "sub rc", s.returncode, s.stderr[-500:], file=sys.stderr)
shutil.rmtree(W)
