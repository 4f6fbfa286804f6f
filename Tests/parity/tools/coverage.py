#!/usr/bin/env python3
"""Per event: what the default parity set runs on it, and its filter cases.

Prints a Markdown table (Tests/parity/README.md, "Coverage of issue 3"): per event the
number of default cases, the workloads, the case with the `iotype` filter and the one
with the `sector` filter. With a parity.py --json FILE of the default set, each filter
case also shows whether blkdebug injected and whether blkfault was identical, and the
event its inject/identical counts.

usage: coverage.py [PARITY_JSON]"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import scenarios  # noqa: E402

results = {}
if len(sys.argv) > 1:
    with open(sys.argv[1]) as f:
        results = {c["id"]: c for c in json.load(f)["cases"]}

cases = scenarios.matrix_cases(False) + scenarios.chain_cases()
by_event: dict[str, list] = {}
for c in cases:
    by_event.setdefault(c.event, []).append(c)


def outcome(cid: str) -> str:
    r = results.get(cid)
    if not r:
        return ""
    if r["kind"] != "inject":
        return " (no injection)"
    tags = [t for t in r["tags"] if t in ("undecidable", "flush-latch")]
    return " (inject, " + ("identical" if r["identical"] else "differs") + \
        (", " + ", ".join(tags) if tags else "") + ")"


def filt(cs, kind):
    hit = [c for c in cs if c.group == "filter" and kind in c.params]
    hit += [c for c in cs if c.group != "filter" and kind in c.params]
    return "; ".join(f"`{kind}={c.params[kind]}` on {c.workload.key}{outcome(c.id)}"
                     for c in hit) or "–"


print("| event | default cases | inject / identical | workloads | iotype case | sector case |")
print("|---|---:|---:|---|---|---|")
for ev in scenarios.MATRIX_EVENTS:
    cs = by_event.get(ev, [])
    inj = [results[c.id] for c in cs if c.id in results and results[c.id]["kind"] == "inject"]
    ident = sum(r["identical"] for r in inj)
    wks = sorted({c.workload.key for c in cs})
    print(f"| `{ev}` | {len(cs)} | {f'{len(inj)} / {ident}' if results else ''} | "
          f"{', '.join(wks)} | {filt(cs, 'iotype')} | {filt(cs, 'sector')} |")
chains = by_event.get("chain", [])
print(f"\nChains ({len(chains)}) with a filter: " + ", ".join(
    f"{c.id} ({'iotype' if 'iotype =' in c.rules else ''}"
    f"{'+' if 'iotype =' in c.rules and 'sector =' in c.rules else ''}"
    f"{'sector' if 'sector =' in c.rules else ''})"
    for c in chains if "iotype =" in c.rules or "sector =" in c.rules))
