#!/usr/bin/env bash
# asan.sh: the I/O and parser tests (every file format, the job, merge and sweep files, the control
# protocol, the replayed fuzz findings) built with AddressSanitizer, in a build folder of their
# own (.build-asan). Any over-read, use-after-free or double free ends the run with a report.
#
# Usage: scripts/asan.sh [extra swift test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
filter="DatasetTests|SafetensorsTests|CheckpointTests|JobConfigTests|MergeRecipeTests|SweepTests|ControlProtocolTests|FuzzReplayTests|FileSystemMessageTests|AnalysisConfigTests|MergeShardingConfigTests"
# Leak checks off: the Swift runtime's and Foundation's process-wide caches read as leaks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"
swift build --build-tests --build-path .build-asan -Xswiftc -sanitize=address -Xcc -fsanitize=address
swift test --skip-build --build-path .build-asan --filter "$filter" "$@"
