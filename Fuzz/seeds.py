#!/usr/bin/env python3
"""Seed corpora for scripts/fuzz: rule files (rules/*.cfg, QEMU-style files of every
key and shape) and shadow-model inputs (real qcow2 images made by qemu-img over several
geometries, each followed by operations aimed at its metadata)."""
import os, random, struct, subprocess, sys, tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1]
rules_dir, shadow_dir = os.path.join(out, "rules"), os.path.join(out, "shadow")
os.makedirs(rules_dir, exist_ok=True)
os.makedirs(shadow_dir, exist_ok=True)
rng = random.Random(8)

# --- rule files ---
def put(name, text):
    with open(os.path.join(rules_dir, name), "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)

for n in sorted(os.listdir(os.path.join(root, "rules"))):
    if n.endswith(".cfg"):
        put(n, open(os.path.join(root, "rules", n), "rb").read())
events = ["l1_update", "l2_load", "l2_alloc_write", "cluster_alloc", "refblock_alloc", "flush_to_disk",
          "write_aio", "read_aio", "none", "pwritev", "reftable_grow", "cluster_free"]
shapes = [
    '[inject-error]\nevent = "{e}"\nerrno = "5"\nonce = "on"\n',
    '[inject-error "id{i}"]\nevent = "{e}"\nstate = "2"\nerrno = "-28"\nsector = "128"\nimmediately = "off"\niotype = "write,flush"\n',
    '# comment\n[set-state]\nevent = "{e}"\nstate = "1"\nnew_state = "2"\n\n[inject-error]\nevent = "{e}"\nstate = "2"\nerrno = "0x1c"\n',
    '[inject-error]\r\nevent = "{e}"\r\nerrno = "012"\r\nonce = "off"\r\niotype = "read,write,write-zeroes,discard,flush,block-status"\r\n',
    '[inject-error]\nevent = "{e}"\nerrno = " 5"\nsector = "-1"\n[set-state]\nevent = "{e}"\nnew_state = "3"\n',
    '[inject-error]\nevent = "{e}"\nerrno = "5\n',
    '[inject-error]\nevent = "{e}"\nevent = "l1_update"\n',
    '[set-state]\nevent = "{e}"\nstate = "0"\nnew_state = "0"\n',
    '[inject-error]\nbogus = "1"\n',
    '[inject-error]\nevent = "{e}"\nerrno = "99999999999999999999"\n',
    '',
    '\n',
    '[inject-error]\nevent = "{e}"\nonce = "yes"\n[inject-error\n',
]
for i, shape in enumerate(shapes):
    for j, e in enumerate(events[: 3 if i > 4 else len(events)]):
        put(f"shape{i}-{e}.cfg", shape.format(e=e, i=j))
put("binary.cfg", bytes(range(256)))
put("long.cfg", '[inject-error]\nevent = "l1_update"\n' * 200)

# --- shadow-model inputs: sparse image (see ShadowModelFuzz.swift), then 8-byte operations ---
def sparse(img):
    chunks, i = [], 0
    while i < len(img) and len(chunks) < 255:
        if img[i] == 0:
            i += 1
            continue
        j = i
        while j < len(img) and j - i < 65535 and any(img[j:j + 16]):
            j += 16
        j = min(j, len(img))
        chunks.append((i, img[i:j]))
        i = j
    out = struct.pack("<IB", len(img), len(chunks))
    for at, b in chunks:
        out += struct.pack("<IH", at, len(b)) + b
    return out

def op(kind, offset, length_code, pattern):
    return struct.pack("<BBIH", kind, length_code, offset & 0xFFFFFFFF, pattern)

def metadata_ops(img):
    if len(img) < 72 or img[:4] != b"QFI\xfb":
        return b""
    cbits = struct.unpack(">I", img[20:24])[0]
    l1 = struct.unpack(">Q", img[40:48])[0]
    rt = struct.unpack(">Q", img[48:56])[0]
    targets = [0, 36, 48, l1, rt, rt + (1 << cbits), l1 + (1 << cbits), len(img), len(img) + (1 << cbits)]
    ops = b""
    for _ in range(rng.randint(4, 40)):
        t = rng.choice(targets)
        kind = rng.randrange(7)
        code = rng.choice([0, 1, 2, 3, 4, 5, 6, 0x38]) | (1 << 6)   # mode 1: offset = raw * 8
        ops += op(kind, t // 8, code, rng.randrange(65536))
    return ops

def qemu(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

geometries = [
    ("512", "cluster_size=512"), ("1k-rc1", "cluster_size=1024,refcount_bits=1"),
    ("4k", "cluster_size=4096"), ("4k-rc64", "cluster_size=4096,refcount_bits=64"),
    ("4k-v2", "cluster_size=4096,compat=0.10"), ("4k-lazy", "cluster_size=4096,lazy_refcounts=on"),
    ("16k-ext", "cluster_size=16384,extended_l2=on"), ("64k", "cluster_size=65536"),
    ("2k-rc8", "cluster_size=2048,refcount_bits=8"),
]
with tempfile.TemporaryDirectory() as tmp:
    for name, opts in geometries:
        for variant, cmds in [("fresh", []), ("written", ["write -P 0x5a 0 8k", "write 1M 4k"]),
                              ("discarded", ["write 0 16k", "discard 0 8k", "write -z 64k 4k"])]:
            img = os.path.join(tmp, "i.qcow2")
            qemu("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, "4M")
            for c in cmds:
                qemu("qemu-io", "-c", c, img)
            data = open(img, "rb").read()
            for k in range(3):
                body = sparse(data) + (metadata_ops(data) if k else b"")
                with open(os.path.join(shadow_dir, f"{name}-{variant}-{k}"), "wb") as f:
                    f.write(body)
print(len(os.listdir(rules_dir)), "rule seeds,", len(os.listdir(shadow_dir)), "shadow seeds")
