#!/usr/bin/env python3
"""The events real blkdebug raises, lined up with the image file's system calls.

Runs a QEMU tool under gdb with a breakpoint on bdrv_debug_event (exported by
Debian's qemu-img/qemu-io) and catchpoints on the file I/O system calls, and prints
one timeline: `  [event]` lines (raised on the blkdebug node) and the calls on the
image's descriptor (the first one after `none`). A developer's tool: needs gdb.

usage: blkdebug_events.py IMG -- CMD ARGS...   (CMD opens blkdebug::IMG)"""
import os, re, subprocess, sys, tempfile
names = """l1_update l1_grow_alloc_table l1_grow_write_table l1_grow_activate_table
l2_load l2_update l2_update_compressed l2_alloc_cow_read l2_alloc_write
read_aio read_backing_aio read_compressed write_aio write_compressed
vmstate_load vmstate_save cow_read cow_write
reftable_load reftable_grow reftable_update
refblock_load refblock_update refblock_update_part refblock_alloc
refblock_alloc_hookup refblock_alloc_write refblock_alloc_write_blocks
refblock_alloc_write_table refblock_alloc_switch_table
cluster_alloc cluster_alloc_bytes cluster_free
flush_to_os flush_to_disk
pwritev_rmw_head pwritev_rmw_after_head pwritev_rmw_tail pwritev_rmw_after_tail
pwritev pwritev_zero pwritev_done
empty_image_prepare l1_shrink_write_table l1_shrink_free_l2_clusters
cor_write cluster_alloc_space none""".split()
i = sys.argv.index("--")
img = os.path.realpath(sys.argv[1]); cmd = sys.argv[i+1:]
sysc = "pread64 pwrite64 preadv pwritev preadv2 pwritev2 fdatasync fsync fallocate ftruncate openat close"
script = f"""set pagination off
set confirm off
set print thread-events off
handle SIGUSR1 SIGUSR2 SIGPIPE nostop noprint pass
break bdrv_debug_event
commands
silent
printf "EV %lx %d\\n", $rdi, $rsi
continue
end
catch syscall {sysc}
commands
silent
if $rax == -38
if $orig_rax == 295 || $orig_rax == 296
set $t = 0
set $i = 0
while $i < $rdx
set $t = $t + *(unsigned long *)($rsi + 16 * $i + 8)
set $i = $i + 1
end
printf "SC %d %d %lx %lx %lx\\n", $orig_rax, $rdi, $rsi, $t, $r10
else
printf "SC %d %d %lx %lx %lx\\n", $orig_rax, $rdi, $rsi, $rdx, $r10
end
end
continue
end
run
"""
with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
    f.write(script); sp = f.name
p = subprocess.run(["gdb", "-q", "-batch", "-x", sp, "--args", *cmd], capture_output=True, text=True)
SYS = {17: "pread", 18: "pwrite", 295: "preadv", 296: "pwritev", 327: "preadv2", 328: "pwritev2",
       75: "fdatasync", 74: "fsync", 285: "fallocate", 77: "ftruncate", 257: "openat", 3: "close"}
lines = p.stdout.splitlines()
# the blkdebug node: the bs that got reftable_load (18) or none (47)
cnt = {}
for l in lines:
    m = re.match(r"EV (\w+) (\d+)", l)
    if m and int(m.group(2)) in (18, 47): cnt[m.group(1)] = cnt.get(m.group(1), 0) + 1
node = max(cnt, key=cnt.get) if cnt else None
out = []
imgfds = set()
for l in lines:
    m = re.match(r"EV (\w+) (\d+)", l)
    if m:
        if m.group(1) == node: out.append("  [" + names[int(m.group(2))] + "]")
        continue
    m = re.match(r"SC (\d+) (-?\d+) (\w+) (\w+) (\w+)", l)
    if m:
        nr, fd = int(m.group(1)), int(m.group(2))
        a1, a2, a3 = (int(x, 16) for x in m.group(3, 4, 5))
        n = SYS.get(nr, str(nr))
        if n in ("fdatasync", "fsync"): out.append(f"{n}({fd})")
        elif n in ("pread", "pwrite"): out.append(f"{n}({fd}, {a2} @{a3})")
        elif n in ("preadv", "pwritev", "preadv2", "pwritev2"): out.append(f"{n}({fd}, {a2} @{a3})")
        elif n == "fallocate": out.append(f"fallocate({fd}, mode={a1}, @{a2}, {a3})")
        elif n == "ftruncate": out.append(f"ftruncate({fd}, {a1})")
        else: out.append(f"{n}({fd})")
        continue
# keep the image fd's I/O (the first I/O after [none]) and events
fd = None
for k, l in enumerate(out):
    if l == "  [none]":
        for l2 in out[k+1:]:
            m = re.match(r"\w+\((\d+)", l2)
            if m: fd = m.group(1); break
        break
keep = [l for l in out if l.startswith("  [") or (fd and re.match(r"\w+\(" + fd + r"[,)]", l) and not l.startswith(("openat", "close")))]
# collapse runs of a repeated group (1 or 2 lines)
res = []
k = 0
while k < len(keep):
    done = False
    for g in (1, 2):
        grp = keep[k:k+g]
        n = 1
        while keep[k+n*g:k+(n+1)*g] == grp: n += 1
        if n > 2:
            res.append(" ".join(x.strip() for x in grp) + f"  x{n}"); k += n*g; done = True; break
    if not done: res.append(keep[k]); k += 1
print("\n".join(res))
print("--- stderr/other:", file=sys.stderr)
print("\n".join(l for l in lines if not l.startswith(("EV", "SC"))), file=sys.stderr)
print(p.stderr[-2000:], file=sys.stderr)
