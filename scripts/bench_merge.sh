#!/usr/bin/env bash
# bench_merge.sh: peak resident memory per rank and throughput of sharded vs all-gather merging,
# T = 8 synthetic task vectors of ≥ 50 M parameters, under mpirun with 1, 2 and 4 ranks.
#
# Usage: scripts/bench_merge.sh [--tasks 8] [--parameters 50000000] [--ranks "1 2 4"] [--methods "task_arithmetic ties"]
# One mpirun per (ranks, method, variant): VmHWM is a per-process peak. A configuration whose
# estimated need exceeds MemAvailable is skipped and reported as such (the machine has no swap).
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=8
parameters=50000000
ranks_list="1 2 4"
methods="task_arithmetic ties"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tasks) tasks="$2"; shift 2 ;;
        --parameters) parameters="$2"; shift 2 ;;
        --ranks) ranks_list="$2"; shift 2 ;;
        --methods) methods="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
swift build -c release --product orthofuse >/dev/null
bench=.build/release/orthofuse

# Rough peak per rank in floats, in units of one task vector (P floats): all-gather holds its own
# vectors twice (results and the send block), the gathered blocks and MPI's staging copy of them,
# then T merge inputs; sharded holds its own vectors, one outgoing vector, T slices and Δ.
estimate_bytes() {
    local variant=$1 np=$2
    local own=$(( (tasks + np - 1) / np ))
    local vectors
    if [[ $variant == allgather ]]; then vectors=$(( 2 * own + 2 * tasks + 4 )); else vectors=$(( own + 4 + (tasks + np - 1) / np )); fi
    echo $(( vectors * parameters * 4 * np ))
}

summary=()
for np in $ranks_list; do
    for method in $methods; do
        for variant in sharded allgather; do
            need=$(estimate_bytes "$variant" "$np")
            available=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) * 1024 ))
            if (( need > available * 9 / 10 )); then
                line="np $np $method $variant: skipped, needs about $(( need >> 30 )) GiB, $(( available >> 30 )) GiB available"
                echo "$line"
                summary+=("$line")
                continue
            fi
            output=$(cluster/launch.sh -np "$np" -- "$bench" bench merge --variant "$variant" --method "$method" \
                --tasks "$tasks" --parameters "$parameters")
            echo "$output"
            peak=$(echo "$output" | sed -nE 's/.*VmHWM ([0-9]+) MiB.*/\1/p' | sort -n | tail -1)
            rate=$(echo "$output" | sed -nE 's/.*throughput ([0-9.]+) GB\/s.*/\1/p')
            seconds=$(echo "$output" | sed -nE 's/^  time ([0-9.]+) s.*/\1/p')
            check=$(echo "$output" | sed -nE 's/.*checksum ([0-9a-f]+).*/\1/p')
            summary+=("$(printf 'np %d  %-15s %-9s  peak/rank %6d MiB  %6.2f s  %5.2f GB/s  Δ %s' \
                "$np" "$method" "$variant" "$peak" "$seconds" "$rate" "$check")")
        done
    done
done
echo
echo "T = $tasks task vectors of $parameters+ parameters (max VmHWM over ranks; time from every rank holding its own vectors to every rank holding Δ):"
printf '%s\n' "${summary[@]}"
