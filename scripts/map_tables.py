#!/usr/bin/env python3
"""Markdown tables of the OrthoReg map from results/*/summary.csv (stdlib only).

For each sweep: one row per setting (everything but the seed), mean ± sample std over its seeds, of
fine-tuned accuracy and, per merge, merged accuracy and retention; ‖τ‖, cosine and ‖G − I‖; and
the paired difference in task-arithmetic merged accuracy against the λ = 0 cell of the same seed
(same θ0, heads and data streams). A difference is marked * when the two settings' mean ± std
intervals do not overlap, the bar docs/results.md uses for "beyond the spread".

Usage: python3 scripts/map_tables.py [results/NAME/summary.csv ...]   (default: every summary)
"""
import csv
import glob
import math
import os
import sys
from collections import OrderedDict

SETTING = ["suite", "arch", "width", "mode", "head", "lr", "steps", "form", "lambda"]
BASE = ["suite", "arch", "width", "mode", "head", "lr", "steps"]


def mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def fmt(pair, scale=100, digits=2):
    m, s = pair
    if not math.isfinite(m):
        return ""
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def table(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    merges = list(OrderedDict.fromkeys(r["merge"] for r in rows))
    groups = OrderedDict()
    for r in rows:
        groups.setdefault(tuple(r[k] for k in SETTING), []).append(r)
    # The λ = 0 task-arithmetic merged accuracy per (base setting, seed), for paired differences.
    reference = {}
    for r in rows:
        if r["form"] == "none" and r["merge"] == "task_arithmetic":
            reference[(tuple(r[k] for k in BASE), r["seed"])] = number(r["merged_abs"])
    varying = [k for k in SETTING if len({g[SETTING.index(k)] for g in groups}) > 1]
    header = varying + ["n", "fine-tuned"]
    for m in merges:
        header += [f"{m}", f"{m} retention"]
    header += ["Δ TA vs λ=0 (paired)", "‖τ‖", "cosine", "‖G − I‖"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_merge = {}
    for key, members in groups.items():
        by_merge.setdefault(key, {})
        for r in members:
            by_merge[key].setdefault(r["merge"], []).append(r)
    stats = {}
    for key in groups:
        ta = by_merge[key].get("task_arithmetic", [])
        stats[key] = mean_std([number(r["merged_abs"]) for r in ta])
    for key, merged in by_merge.items():
        first = next(iter(merged.values()))
        cells = [key[SETTING.index(k)] for k in varying]
        cells += [str(len(first)), fmt(mean_std([number(r["finetuned"]) for r in first]))]
        for m in merges:
            rs = merged.get(m, [])
            cells += [fmt(mean_std([number(r["merged_abs"]) for r in rs])),
                      fmt(mean_std([number(r["retention"]) for r in rs]), digits=0)]
        ta = merged.get("task_arithmetic", [])
        deltas = []
        for r in ta:
            ref = reference.get((tuple(r[k] for k in BASE), r["seed"]))
            if ref is not None and r["form"] != "none":
                deltas.append(number(r["merged_abs"]) - ref)
        mark = ""
        ref_key = tuple(list(key[:SETTING.index("form")]) + ["none", "0.0"])
        if deltas and ref_key in stats:
            (a, sa), (b, sb) = stats[key], stats[ref_key]
            if abs(a - b) > sa + sb:
                mark = " *"
        cells.append((fmt(mean_std(deltas)) + mark) if deltas else "")
        cells += [fmt(mean_std([number(r["tau_norm"]) for r in first]), 1, 2),
                  fmt(mean_std([number(r["mean_cosine"]) for r in first]), 1, 3),
                  fmt(mean_std([number(r["mean_gram_deviation"]) for r in first]), 1, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    zs = mean_std([number(r["zero_shot"]) for r in rows if r["merge"] == merges[0]])
    return lines, zs


def main():
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "results", "*", "summary.csv")))
    for path in paths:
        lines, zs = table(path)
        name = os.path.basename(os.path.dirname(path))
        print(f"### {name}\n\nzero-shot (every cell of the sweep): {fmt(zs)}\n")
        print("\n".join(lines))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
