#!/usr/bin/env python3
"""Run parity cases many times and count their distinct outcomes, to tell a case whose
result depends on timing from one where blkfault differs from blkdebug.

For each case id (exact, from `parity.py --list`) it runs the reference (real blkdebug)
and/or the subject (the preload) N times, each on a fresh image, and groups the runs by
outcome (qemu-io output, qemu-img check, image bytes: the harness's three keys).
--slow stacks tools/slowio.c (built into the work directory) on every qemu process:
writes of 32 KiB and more sleep 2-20 ms (SLOWIO_* in the environment change that).
--hogs N runs N busy loops for the duration. --hold stacks tools/holdfail.c in front
of the preload (subject side): a failed read/write of a worker thread returns only once
QEMU's main thread next waits (ppoll/poll). Distinct outcomes of the reference alone
mean blkdebug's own result varies: the case is undecidable by timing.

usage: repeat.py [--so SO] [--runs N] [--side reference|subject|both] [--slow]
                 [--hold] [--hogs N] [--full] [--out DIR] CASE_ID...
e.g.   repeat.py --runs 20 --side reference --slow flush_to_os-e5-once_off-imm_on-leak"""
import argparse, collections, multiprocessing, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import parity  # noqa: E402


def build_slowio(work: str, name: str = "slowio") -> str:
    so = os.path.join(work, f"{name}.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", so,
                    os.path.join(HERE, f"{name}.c"), "-ldl"], check=True)
    return so


class SlowRunner(parity.Runner):
    """A Runner that stacks another preload under every qemu process it starts."""

    def __init__(self, *a, extra_preload=None, front_preload=None, **kw):
        super().__init__(*a, **kw)
        self.extra = extra_preload
        self.front = front_preload  # only in front of an existing LD_PRELOAD (the subject)

    def _run(self, argv, env, merge=False):
        if self.extra:
            pre = env.get("LD_PRELOAD")
            env = dict(env, LD_PRELOAD=f"{pre}:{self.extra}" if pre else self.extra)
        if self.front and env.get("LD_PRELOAD"):
            env = dict(env, LD_PRELOAD=f"{self.front}:{env['LD_PRELOAD']}")
        return super()._run(argv, env, merge)


def hog():
    while True:
        pass


def outcome(res: parity.RunResult):
    return (repr(res.output_key()), repr(res.check_key()), res.digest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--so", default=None)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--side", choices=("reference", "subject", "both"), default="both")
    ap.add_argument("--slow", action="store_true")
    ap.add_argument("--hold", action="store_true",
                    help="stack tools/holdfail.c in front of the preload")
    ap.add_argument("--hogs", type=int, default=0)
    ap.add_argument("--gaps", action="store_true", help="look the case up in --gaps too")
    ap.add_argument("--full", action="store_true", help="look the case up in --full too")
    ap.add_argument("--out", default=None, help="keep one transcript per distinct outcome")
    args = ap.parse_args()
    all_cases = {c.id: c for c in parity.scenarios.matrix_cases(False, False)
                 + parity.scenarios.matrix_cases(False, True) + parity.scenarios.chain_cases()}
    if args.full:
        all_cases.update({c.id: c for c in parity.scenarios.matrix_cases(True)})
    missing = [c for c in args.cases if c not in all_cases]
    if missing:
        sys.exit(f"repeat.py: unknown case(s): {', '.join(missing)}")
    work = tempfile.mkdtemp(prefix="blkfault-repeat-", dir="/tmp")
    extra = build_slowio(work) if args.slow else None
    so = parity.find_so(args.so) if args.side != "reference" else None
    front = build_slowio(work, "holdfail") if args.hold else None
    runner = SlowRunner("preload", so, 600, extra_preload=extra, front_preload=front)
    hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    sides = ["reference", "subject"] if args.side == "both" else [args.side]
    rc = 0
    try:
        for cid in args.cases:
            case = all_cases[cid]
            cfg = os.path.join(work, "rules.cfg")
            with open(cfg, "w") as f:
                f.write(case.rules)
            groups = {s: collections.OrderedDict() for s in sides}
            for i in range(args.runs):
                for s in sides:
                    d = os.path.join(work, f"{s}.{i}")
                    res = parity.run_workload(runner, case.workload, s, d, cfg)
                    k = outcome(res)
                    groups[s].setdefault(k, []).append(i)
                    if args.out and len(groups[s][k]) == 1:
                        n = list(groups[s]).index(k)
                        o = os.path.join(args.out, cid, f"{s}.{n}")
                        os.makedirs(o, exist_ok=True)
                        with open(o + "/transcript", "w") as f:
                            f.write(res.transcript() + "\n" + res.check_text()
                                    + f"\nsha256 {res.digest}\n")
                    shutil.rmtree(d, ignore_errors=True)
            names = {}
            print(f"{cid}: {args.runs} runs per side"
                  + (" (slowio)" if extra else "") + (" (holdfail)" if front else "")
                  + (f" ({args.hogs} hogs)" if hogs else ""))
            for s in sides:
                for k, runs in groups[s].items():
                    name = names.setdefault(k, f"outcome {chr(ord('A') + len(names))}")
                    print(f"  {s:9} {name}: {len(runs)} runs  check={k[1][:90]!r}"
                          f"  sha={k[2][:12]}")
            if len(sides) == 2 and set(groups["subject"]) - set(groups["reference"]):
                rc = 1
    finally:
        for h in hogs:
            h.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
