#!/usr/bin/env bash
# test.sh: installs what is missing, builds, and runs every test (unit and mpirun integration).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
