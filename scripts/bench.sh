#!/usr/bin/env bash
# bench.sh: orthofuse's training step against PyTorch's on this machine, in the same run: the MLP
# 784-256-256 and the demo's ViT (28×28, patch 7, width 64, depth 4), each without and with
# OrthoReg, one thread each, batch 128. Needs a CPU torch for the comparison (pip install
# torch==2.13.0+cpu; timm for the ViT); prints the ratios.
#
# Usage: scripts/bench.sh [--steps N] [--batch B]   (PYTHON=... picks the interpreter with torch)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=300
batch=128
while [[ $# -gt 0 ]]; do
    case "$1" in
        --steps) steps="$2"; shift 2 ;;
        --batch) batch="$2"; shift 2 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python3}"
swift build -c release --product orthofuse >/dev/null
bench() { .build/release/orthofuse bench train --batch "$batch" "$@"; }

ours=()
for lambda in 0 1; do ours+=("$(bench --arch mlp --steps "$steps" --orthoreg "$lambda")"); done
for lambda in 0 1; do ours+=("$(bench --arch vit --steps $(( steps / 10 > 10 ? steps / 10 : 10 )) --orthoreg "$lambda")"); done
printf '%s\n' "${ours[@]}"
if ! "$python" -c "import torch" 2>/dev/null; then
    echo "torch not installed: pip install torch==2.13.0+cpu for the comparison (PYTHON=... to pick its interpreter)"
    exit 0
fi
theirs=$(cd scripts && "$python" bench_torch.py --steps "$steps" --batch "$batch")
echo "$theirs"
# Pair each of ours (JSON lines, in the order mlp 0, mlp 1, vit 0, vit 1) with torch's line of the same setting.
printf '%s\n' "${ours[@]}" | "$python" -c '
import json, re, sys
torch = {}
for line in sys.argv[1].splitlines():
    match = re.match(r"torch (mlp|vit) .*orthoreg=([0-9.]+): ([0-9.]+) ms/step", line)
    if match: torch[(match[1], float(match[2]))] = float(match[3])
for line in sys.stdin:
    ours = json.loads(line)
    key = (ours["arch"], float(ours["orthoreg"]))
    if key in torch:
        mine = ours["ms_per_step"]
        print(f"{key[0]} orthoreg={key[1]:g}: orthofuse {mine:.2f} ms, torch {torch[key]:.2f} ms: "
              f"torch/orthofuse {torch[key] / mine:.2f}x (>1: orthofuse is faster)")
' "$theirs"
