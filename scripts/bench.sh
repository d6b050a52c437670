#!/usr/bin/env bash
# bench.sh: orthofuse's training step against PyTorch's on this machine, in the same run: the MLP
# 784-256-256 and the demo's ViT (28×28, patch 7, width 64, depth 4), each without and with
# OrthoReg, one thread each, batch 128. Needs a CPU torch for the comparison (pip install
# torch==2.13.0+cpu; timm for the ViT); prints the ratios.
#
# The ViT runs its step in cache blocks of 8 samples (the model's own, `Backbone.cacheBlock`); it is
# also timed with 4 micro-batches of 32 (a job's default, `finetune.micro_batches`: the same step,
# its gradient summed over the four), and in one pass over the whole batch (`--cache-block` the
# batch size, as PyTorch computes it), each against the same PyTorch step.
#
# The two tools take turns `--repeats` times (orthofuse's four settings, then PyTorch's, and
# again), so that a slow spell of a shared machine falls on both; each line gives the median of
# the repeats' ratios and their range.
#
# Usage: scripts/bench.sh [--steps N] [--batch B] [--repeats R]   (PYTHON=... picks the interpreter with torch)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=300
batch=128
repeats=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --steps) steps="$2"; shift 2 ;;
        --batch) batch="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python3}"
swift build -c release --product orthofuse 2>&1 | grep -E "error" || true
bench() { .build/release/orthofuse bench train --batch "$batch" "$@"; }
vit_steps=$(( steps / 5 > 10 ? steps / 5 : 10 ))
has_torch=true
"$python" -c "import torch" 2>/dev/null || has_torch=false

ours=""
theirs=""
for ((repeat = 1; repeat <= repeats; repeat++)); do
    for lambda in 0 1; do ours+="$(bench --arch mlp --steps "$steps" --orthoreg "$lambda")"$'\n'; done
    for lambda in 0 1; do ours+="$(bench --arch vit --steps "$vit_steps" --orthoreg "$lambda")"$'\n'; done
    for lambda in 0 1; do ours+="$(bench --arch vit --steps "$vit_steps" --orthoreg "$lambda" --micro-batches 4)"$'\n'; done
    for lambda in 0 1; do ours+="$(bench --arch vit --steps "$vit_steps" --orthoreg "$lambda" --cache-block "$batch")"$'\n'; done
    if $has_torch; then theirs+="$(cd scripts && "$python" bench_torch.py --steps "$steps" --batch "$batch")"$'\n'; fi
done
printf '%s' "$ours"
if ! $has_torch; then
    echo "torch not installed: pip install torch==2.13.0+cpu for the comparison (PYTHON=... to pick its interpreter)"
    exit 0
fi
printf '%s' "$theirs"
# Pair the k-th run of each setting (ours: JSON lines; torch's: text lines) and take medians.
printf '%s' "$ours" | "$python" -c '
import json, re, statistics, sys
torch, mine = {}, {}
for line in sys.argv[1].splitlines():
    match = re.match(r"torch (mlp|vit) .*orthoreg=([0-9.]+): ([0-9.]+) ms/step", line)
    if match: torch.setdefault((match[1], float(match[2])), []).append(float(match[3]))
for line in sys.stdin:
    ours = json.loads(line)
    whole = ours["arch"] != "mlp" and ours["cache_block"] >= ours["batch"]
    mine.setdefault((ours["arch"], float(ours["orthoreg"]), ours["micro_batches"], whole), []).append(ours["ms_per_step"])
for (arch, lam, micro, whole), times in mine.items():
    key = (arch, lam)
    if key not in torch: continue
    ratios = [t / m for m, t in zip(times, torch[key])]
    label = (f"{arch} orthoreg={lam:g}" + (f" ({micro} micro-batches)" if micro > 1 else "")
             + (" (one pass over the whole batch)" if whole else ""))
    print(f"{label}: orthofuse {statistics.median(times):.2f} ms, torch {statistics.median(torch[key]):.2f} ms "
          f"(medians of {len(ratios)}): torch/orthofuse {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f} "
          f"(>1: orthofuse is faster)")
' "$theirs"
