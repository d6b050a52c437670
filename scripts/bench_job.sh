#!/usr/bin/env bash
# bench_job.sh: one whole job with orthofuse (`orthofuse run` under mpirun, one task per rank at a
# time) beside its PyTorch twin (scripts/job_torch.py: the same pipeline, tasks one after another,
# every core as a torch thread), in the same run on this machine. Four tasks (mnist,
# fashion_mnist, animal_mnist, digits), linear-probe heads, OrthoReg λ 1 (Frobenius), task
# arithmetic with α over 21 points chosen on validation. The two pipelines take turns `--repeats`
# times (default 3); prints every run's JSON line, then the median ratio and its range.
#
#   --arch mlp: MLP 784-256-256, 1,000 steps, θ0 pre-trained here once (300 steps on 5 % of the
#               four training sets; cached in the work folder, not timed)
#   --arch vit: the ViT of models/vit-w64.safetensors (patch 7, width 64, depth 4), 300 steps
#
#   --micro-batches M: finetune.micro_batches of the orthofuse job (default: the job default, 1
#               for the MLP and 4 for the ViT, which lets spare ranks share it; with no more ranks
#               than tasks nothing is shared, and 1 sums each batch's gradient without micro-batch parts)
#
#   --tasks LIST: comma-separated task folders under data/ (default the four above)
#
# Usage: scripts/bench_job.sh [--arch mlp|vit] [--steps N] [--tasks LIST] [--ranks R] [--micro-batches M] [--repeats K] [--work DIR]
#        (PYTHON=... picks the interpreter with torch, safetensors and, for the ViT, timm)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
arch=mlp
steps=""
micro=""
ranks=$(nproc)
repeats=3
task_list=mnist,fashion_mnist,animal_mnist,digits
work=/tmp/orthofuse-bench-job
while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --ranks) ranks="$2"; shift 2 ;;
        --micro-batches) micro="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --tasks) task_list="$2"; shift 2 ;;
        *) echo "bench_job.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python3}"
if ! "$python" -c "import torch, safetensors" 2>/dev/null; then
    echo "bench_job.sh: $python cannot import torch and safetensors (PYTHON=... to pick another)" >&2
    exit 2
fi
swift build -c release --product orthofuse 2>&1 | grep -E "error" || true
orthofuse="$root/.build/release/orthofuse"
mkdir -p "$work"
IFS=, read -r -a tasks <<< "$task_list"
task_lines=""
for task in "${tasks[@]}"; do
    task_lines+="  - {name: $task, classes: 10, train: $root/data/$task/train.npz, test: $root/data/$task/test.npz}"$'\n'
done

case "$arch" in
    mlp)
        steps=${steps:-1000}; lr=1.0e-3
        model="{arch: mlp, input: [784], hidden: [256, 256], activation: relu}"
        torch_model=(--arch mlp --input 784 --hidden 256,256)
        pretrain="$work/mlp-pretrain-${task_list//,/-}"   # θ0 pre-trained on these tasks, cached
        base="$pretrain.safetensors"
        if [[ ! -f "$base" ]]; then
            cat > "$pretrain.yaml" <<EOF
name: bench-mlp-pretrain
output: $pretrain
model: $model
pretrain: {fraction: 0.05, steps: 300, batch_size: 128, optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.1}}
tasks:
$task_lines
finetune: {steps: 1, batch_size: 128}
EOF
            "$orthofuse" pretrain "$pretrain.yaml" --save "$base" -q >/dev/null
        fi ;;
    vit)
        steps=${steps:-300}; lr=1.0e-4
        model="{arch: vit, input: [1, 28, 28], patch: 7, width: 64, depth: 4, heads: 4, mlp_ratio: 4}"
        torch_model=(--arch vit --input 1,28,28 --patch 7 --width 64 --depth 4 --heads 4)
        base="$root/models/vit-w64.safetensors" ;;
    *) echo "bench_job.sh: --arch is mlp or vit" >&2; exit 2 ;;
esac

warmup=$(( steps / 10 > 1 ? steps / 10 : 1 ))   # 100 of the MLP's 1,000 steps, 30 of the ViT's 300
job="$work/$arch-job.yaml"
cat > "$job" <<EOF
name: bench-$arch-job
output: $work/$arch-run
model: $model
base: $base
tasks:
$task_lines
finetune:
  mode: full
  steps: $steps
  batch_size: 128
  optimizer: {name: adamw, lr: $lr, weight_decay: 0.1}
  schedule: {warmup_steps: $warmup, decay: cosine}
  grad_clip: 1.0
  orthoreg: {lambda: 1, form: frobenius}${micro:+
  micro_batches: $micro}
head: {steps: 300, batch_size: 256, optimizer: {name: adamw, lr: 1.0e-2, weight_decay: 0.0}}
merge: {methods: [task_arithmetic], alpha: {from: 0.0, to: 1.0, count: 21}}
evaluate: {disentanglement: false}
EOF
run_ours() {
    rm -rf "$work/$arch-run"
    local started finished
    started=$(date +%s.%N)
    cluster/launch.sh -np "$ranks" "$orthofuse" run "$job" -q >/dev/null
    finished=$(date +%s.%N)
    "$python" - "$work/$arch-run/report.json" "$started" "$finished" "$ranks" "$arch" "$steps" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
merge = report["merges"][0]
tasks = report["tasks"]
print(json.dumps({"pipeline": "orthofuse", "arch": sys.argv[5], "tasks": len(tasks), "steps": int(sys.argv[6]),
                  "ranks": int(sys.argv[4]), "seconds": round(float(sys.argv[3]) - float(sys.argv[2]), 2),
                  "alpha": merge["alpha"],
                  "zero_shot": round(sum(t["zero_shot_accuracy"] for t in tasks) / len(tasks), 4),
                  "fine_tuned": round(sum(t["finetuned_accuracy"] for t in tasks) / len(tasks), 4),
                  "merged": round(merge["absolute_accuracy"], 4),
                  "phases": {p["phase"]: round(p["seconds"], 2) for p in report["run"].get("phases", [])}}))
EOF
}
run_theirs() {
    (cd scripts && "$python" job_torch.py "${torch_model[@]}" --base "$base" --data "$root/data" \
        --tasks "$(IFS=,; echo "${tasks[*]}")" --steps "$steps" --lr "$lr" --warmup "$warmup" --threads "$ranks")
}

# The two pipelines take turns, so that a slow spell of a shared machine falls on both.
runs=""
for ((repeat = 1; repeat <= repeats; repeat++)); do
    ours=$(run_ours)
    echo "$ours"
    theirs=$(run_theirs)
    echo "$theirs"
    runs+="$ours"$'\n'"$theirs"$'\n'
done
"$python" - "$runs" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip()]
ours = [r for r in runs if r["pipeline"] == "orthofuse"]
theirs = [r for r in runs if r["pipeline"] == "torch"]
ratios = [t["seconds"] / o["seconds"] for o, t in zip(ours, theirs)]
mine, twin = ours[0], theirs[0]
print(f"whole {mine['arch']} job ({mine['tasks']} tasks, {mine['steps']} steps, OrthoReg 1), median of {len(ratios)}: "
      f"orthofuse {statistics.median(o['seconds'] for o in ours):.1f} s on {mine['ranks']} ranks, "
      f"torch {statistics.median(t['seconds'] for t in theirs):.1f} s on {twin['threads']} threads: "
      f"torch/orthofuse {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
      f"merged accuracy {mine['merged']:.4f} vs {twin['merged']:.4f}")
EOF
