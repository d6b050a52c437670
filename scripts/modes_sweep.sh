#!/usr/bin/env bash
# modes_sweep.sh: the demo's four tasks in every fine-tuning mode, with and without OrthoReg,
# each run under mpirun; prints one summary row per run from its report.json.
#
# Usage: scripts/modes_sweep.sh [MODEL=vit] [STEPS=300] [LAMBDA=1.0] [RANKS=4]
# Needs the prepared data (scripts/demo.sh prepares it) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-vit}"
steps="${2:-300}"
lambda="${3:-1.0}"
ranks="${4:-4}"
swift build -c release --product orthofuse >/dev/null
modes=(full attention lora linearized)
if [[ "$model" == "mlp" ]]; then modes=(full lora linearized); fi
for mode in "${modes[@]}"; do
    for strength in 0 "$lambda"; do
        output="runs/sweep-$model/$mode-$strength"
        start=$(date +%s)
        cluster/launch.sh -np "$ranks" .build/release/orthofuse demo --data data --output "$output" --model "$model" \
            --mode "$mode" --steps "$steps" --orthoreg-lambda "$strength" --quiet >/dev/null
        echo "$output: $(( $(date +%s) - start )) s" >&2
    done
done
python3 - "$model" "${modes[@]}" <<'PY'
import json, sys
model, modes = sys.argv[1], sys.argv[2:]
print(f"{'mode':<11} {'λ':>4} {'fine-tuned':>10} {'TA abs':>7} {'TA norm':>8} {'α':>5} {'‖τ‖':>7} {'‖G−I‖':>8} {'seconds':>8}")
import glob
for mode in modes:
    for path in sorted(glob.glob(f"runs/sweep-{model}/{mode}-*/report.json")):
        r = json.load(open(path))
        tasks, merge = r["tasks"], r["merges"][0]
        mean = lambda key: sum(t[key] for t in tasks) / len(tasks)
        print(f"{mode:<11} {r['run']['orthoreg_lambda']:>4g} {100 * mean('finetuned_accuracy'):>10.2f} "
              f"{100 * merge['absolute_accuracy']:>7.2f} {100 * merge['normalized_accuracy']:>8.2f} {merge['alpha']:>5.2f} "
              f"{mean('task_vector_norm'):>7.3f} {mean('orthoreg_penalty'):>8.3f} {r['run']['wall_seconds']:>8.1f}")
PY
