#!/usr/bin/env bash
# bench_checkpoint_merge.sh: orthofuse merge against mergekit on Llama-shaped BF16 checkpoints
# sharded into 256 MB files (scripts/make_llama_checkpoints.py; about 0.48 B parameters, a base and
# three fine-tunes): task arithmetic and TIES (density 0.2, per tensor, as mergekit ranks), each
# tool's wall time and peak RSS (/usr/bin/time; for 2 ranks, the largest process's), and the largest
# difference between the outputs.
#
# Usage: scripts/bench_checkpoint_merge.sh [DIR]   (default /tmp/llama-bench; made when missing)
# Needs a release build and mergekit in a venv: MERGEKIT_VENV (default /opt/mkvenv), made with
#   python3 -m venv /opt/mkvenv && /opt/mkvenv/bin/pip install torch==2.13.0+cpu mergekit
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-/tmp/llama-bench}"
venv="${MERGEKIT_VENV:-/opt/mkvenv}"
orthofuse=.build/release/orthofuse
[[ -x "$orthofuse" ]] || swift build -c release --product orthofuse
[[ -x "$venv/bin/mergekit-yaml" ]] || { echo "bench_checkpoint_merge.sh: no mergekit in $venv" >&2; exit 2; }
[[ -f "$dir/ft3/model.safetensors.index.json" ]] || python3 scripts/make_llama_checkpoints.py "$dir"
out="$dir/out"
rm -rf "$out"; mkdir -p "$out"

measure() {  # label command...: one line with wall seconds and peak RSS
    local label="$1"; shift
    sync  # the previous step's output on disk first: its writeback would slow this one down
    /usr/bin/time -f "%e %M" -o "$out/$label.time" "$@" > "$out/$label.log" 2>&1
    read -r seconds kilobytes < "$out/$label.time"
    printf '%-28s %8.1f s  %8.0f MB peak RSS\n' "$label" "$seconds" "$((kilobytes / 1024))"
}

models=(--model "$dir/ft1" --model "$dir/ft2" --model "$dir/ft3")
# Both tools read the inputs from the page cache: read them once before any timing (a tool timed
# first would otherwise also pay for the disk).
cat "$dir"/base/*.safetensors "$dir"/ft[123]/*.safetensors > /dev/null
measure "orthofuse task_arithmetic" "$orthofuse" merge --method task_arithmetic --base "$dir/base" "${models[@]}" \
    --output "$out/orthofuse-ta" --shard-size 256MB
measure "orthofuse ties" "$orthofuse" merge --method ties --density 0.2 --trim per-tensor --base "$dir/base" \
    "${models[@]}" --output "$out/orthofuse-ties" --shard-size 256MB
# The same merge by 2 ranks (each writes its half of the shards, 1 thread each): the same files.
measure "orthofuse ties, 2 ranks" cluster/launch.sh -np 2 "$orthofuse" merge --method ties --density 0.2 --trim per-tensor \
    --base "$dir/base" "${models[@]}" --output "$out/orthofuse-ties-2ranks" --shard-size 256MB
diff -r "$out/orthofuse-ties" "$out/orthofuse-ties-2ranks" > /dev/null \
    && echo "orthofuse ties, 2 ranks: the same files as one process" \
    || echo "orthofuse ties, 2 ranks: FILES DIFFER from one process"

for method in task_arithmetic ties; do
    {
        echo "merge_method: $method"
        echo "base_model: $dir/base"
        echo "dtype: float32"          # arithmetic in Float32, as orthofuse's
        echo "out_dtype: bfloat16"
        echo "parameters: {normalize: $([[ $method == ties ]] && echo true || echo false)}"
        echo "models:"
        for m in 1 2 3; do
            echo "  - model: $dir/ft$m"
            echo "    parameters: {weight: 1.0$([[ $method == ties ]] && echo ', density: 0.2')}"
        done
    } > "$out/mergekit-$method.yaml"
    measure "mergekit $method" "$venv/bin/mergekit-yaml" "$out/mergekit-$method.yaml" "$out/mergekit-$method" \
        --out-shard-size 128M --no-copy-tokenizer --lazy-unpickle  # 128 M parameters: 256 MB of BF16
done

# The largest differences between the two outputs, and how many entries differ. Expected: rounding
# (summation order) in task arithmetic; in TIES also the entries tied in |τ| at a tensor's top-k
# threshold (bfloat16 inputs make many), which orthofuse keeps in index order and mergekit in
# torch.argsort's order.
"$venv/bin/python" - "$out" <<'PY'
import json, os, sys
import torch
from safetensors.torch import load_file
out = sys.argv[1]
def load(folder):
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index_path):  # a model smaller than one shard
        return load_file(os.path.join(folder, "model.safetensors"))
    tensors = {}
    for shard in sorted(set(json.load(open(index_path))["weight_map"].values())):
        tensors.update(load_file(os.path.join(folder, shard)))
    return tensors
for method, ours in [("task_arithmetic", "orthofuse-ta"), ("ties", "orthofuse-ties")]:
    a, b = load(os.path.join(out, ours)), load(os.path.join(out, "mergekit-" + method))
    assert set(a) == set(b), "different tensor names"
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    differing = sum((a[k] != b[k]).sum().item() for k in a)
    total = sum(a[k].numel() for k in a)
    dtypes = {str(t.dtype) for t in a.values()}
    print(f"{method}: largest |orthofuse − mergekit| {worst:.3g}; entries that differ {differing} of {total} "
          f"({100 * differing / total:.3f} %); orthofuse dtypes {sorted(dtypes)}")
PY
