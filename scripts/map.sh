#!/usr/bin/env bash
# map.sh: runs the sweeps of the OrthoReg map (results/NAME.yaml) on 2 ranks, resuming where an
# earlier run stopped, and copies each summary (csv + html; never the weights) to results/NAME/.
#
# Usage: scripts/map.sh NAME [NAME ...]     e.g. scripts/map.sh mlp-tasks4 mlp1024-tasks4
# Needs the prepared data (scripts/prepare_data.py) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="${RANKS:-2}"
[[ -x .build/release/orthofuse ]] || swift build -c release --product orthofuse
for name in "$@"; do
    sweep="results/$name.yaml"
    [[ -f "$sweep" ]] || { echo "map.sh: $sweep: no such sweep" >&2; exit 2; }
    cluster/launch.sh -np "$ranks" .build/release/orthofuse sweep "$sweep"
    mkdir -p "results/$name"
    cp "runs/sweeps/$name/summary.csv" "runs/sweeps/$name/summary.html" "results/$name/"
    echo "map.sh: $name: results/$name/summary.csv"
done
