#!/usr/bin/env bash
# bench.sh: orthofuse's training step against PyTorch's on this machine, in the same run.
# Needs a CPU torch for the comparison (pip install torch==2.13.0+cpu); prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product orthofuse-bench >/dev/null
export OPENBLAS_NUM_THREADS=1
ours=$(.build/release/orthofuse-bench "$@")
echo "$ours"
if python3 -c "import torch" 2>/dev/null; then
    theirs=$(cd scripts && python3 bench_torch.py "$@")
    echo "$theirs"
    paste <(echo "$ours" | grep 'ms/step' | sed -E 's/^orthofuse ([a-z]+) .*orthoreg=([0-9.]+): ([0-9.]+) ms.*/\1 \2 \3/') \
          <(echo "$theirs" | grep 'ms/step' | sed -E 's/.*: ([0-9.]+) ms.*/\1/') |
        awk '{ printf "%s orthoreg=%s: torch/orthofuse time ratio %.2fx (>1 means orthofuse is faster)\n", $1, $2, $4 / $3 }'
else
    echo "torch not installed: pip install torch==2.13.0+cpu for the comparison"
fi
