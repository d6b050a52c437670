#!/usr/bin/env bash
# performance.sh: every speed ratio of docs/performance.md from one run on this machine, each
# measured beside its comparison in the same run: the training step against PyTorch
# (scripts/bench.sh), the whole MLP and ViT jobs against their PyTorch twin (scripts/bench_job.sh),
# the task-vector exchange against a bare MPI_Allgather (orthofuse bench allgather), and merging
# real checkpoints against mergekit (scripts/bench_checkpoint_merge.sh). Run it on an idle machine:
# the parts take turns on every core. About 25 minutes on 2 cores (each job pair three times).
#
# Usage: scripts/performance.sh [--skip-merge]
#   PYTHON: the interpreter with torch, safetensors and timm (default python3)
#   MERGEKIT_VENV: the venv with mergekit (default /opt/mkvenv)
set -euo pipefail
cd "$(dirname "$0")/.."
skip_merge=false
[[ "${1:-}" == "--skip-merge" ]] && skip_merge=true
swift build -c release --product orthofuse 2>&1 | grep -E "error" || true
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores," \
    "OpenBLAS $(.build/release/orthofuse bench train --steps 1 | sed -n 's/.*"blas_core":"\([^"]*\)".*/\1/p')"

echo "## training step (1 thread, batch 128, AdamW)"
scripts/bench.sh | grep "torch/orthofuse"
echo "## whole job"
scripts/bench_job.sh --arch mlp | tail -1
scripts/bench_job.sh --arch vit | tail -1
echo "## task-vector exchange (2 ranks, 4 tasks × 16 M parameters)"
cluster/launch.sh -np 2 .build/release/orthofuse bench allgather --tasks 4 --parameters 16000000 | tail -1
if ! $skip_merge; then
    echo "## merging a 0.48 B-parameter BF16 checkpoint (base + 3), against mergekit"
    scripts/bench_checkpoint_merge.sh
fi
