#!/usr/bin/env bash
# fuzz.sh: runs one libFuzzer target of Fuzz/ (a parser of orthofuse's inputs) under
# AddressSanitizer for SECONDS, seeded from valid files, within 2 GB of memory; a crash,
# time-out or out-of-memory input is written to Fuzz/crashes/TARGET/ (commit it: the tests replay
# every file there).
#
# Usage: scripts/fuzz.sh TARGET SECONDS    TARGET: safetensors npy npz idx gzip job merge_config sweep control
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
[[ -d "Fuzz/Sources/fuzz_$target" ]] || { echo "fuzz.sh: no target $target (see Fuzz/Sources)" >&2; exit 2; }

(cd Fuzz && swift build --product "fuzz_$target" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
    -Xcc -fsanitize=fuzzer-no-link,address >/dev/null)
binary="Fuzz/.build/debug/fuzz_$target"

# Seeds: the valid files of the kind this target reads.
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
fixtures=Tests/CoreTests/Fixtures
case "$target" in
    safetensors) cp $fixtures/*.safetensors "$seeds"/ ;;
    npy) cp $fixtures/*.npy "$seeds"/ ;;
    npz) cp $fixtures/*.npz "$seeds"/ ;;
    idx) cp $fixtures/idx_images.idx $fixtures/idx_labels.idx "$seeds"/ ;;
    gzip) cp $fixtures/idx_images_gzipped.idx $fixtures/*.gz "$seeds"/ ;;
    job) cp results/jobs/*.yaml models/*.yaml "$seeds"/ ;;
    sweep) cp results/*.yaml "$seeds"/ ;;
    merge_config) printf 'method: ties\ndensity: 0.2\ntrim: global\nalpha: 1.0\nmodels: [a.safetensors, b.safetensors]\n' > "$seeds/merge.yaml" ;;
    control) ;;
esac
corpus="Fuzz/.corpus/$target"
crashes="Fuzz/crashes/$target"
mkdir -p "$corpus" "$crashes"
echo "fuzz.sh: $target for $seconds s (corpus $corpus, findings in $crashes)"
# -detect_leaks=0 (and LeakSanitizer off at exit, where it would file its report as a crash of an
# empty input): Foundation's process-wide caches (file manager, zip archive state) are reported as
# leaks; crashes, over-reads, hangs and memory blow-ups are what is hunted.
ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
"$binary" "$corpus" "$seeds" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -detect_leaks=0 \
    -artifact_prefix="$crashes/" -print_final_stats=1 2>&1 | grep -E "^#|stat::|ERROR|SUMMARY|Test unit written|artifact" | tail -25
