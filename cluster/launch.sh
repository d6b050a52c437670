#!/usr/bin/env bash
# launch.sh: the one place that knows the mpirun flags orthofuse needs on this kind of machine.
#
# Usage: cluster/launch.sh -np N [--hostfile FILE] [more mpirun options] -- PROGRAM [ARGS...]
#        cluster/launch.sh -np N PROGRAM [ARGS...]
#
# - root needs --allow-run-as-root; more ranks than cores need --oversubscribe;
# - --bind-to none: otherwise OpenMPI pins every rank of a small machine to one core;
# - pml ob1: MPI_Init about 3x faster here than the default (ucx probing);
# - OpenBLAS: one thread per rank (ranks are the parallelism) and the right kernels for the CPU
#   (Debian's OpenBLAS falls back to its slowest kernels on AVX-512 CPUs unless told);
# - --quiet: no mpirun help blocks on failure; orthofuse's rank 0 prints the one line that says what
#   happened (a job error, or "the job was stopped" when another rank died).
set -euo pipefail

mpirun_options=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; break ;;
        -np|-n|--hostfile|-hostfile|--host|-H|--map-by|--mca|-x)
            if [[ "$1" == "--mca" ]]; then mpirun_options+=("$1" "$2" "$3"); shift 3; continue; fi
            mpirun_options+=("$1" "$2"); shift 2 ;;
        -*) mpirun_options+=("$1"); shift ;;
        *) break ;;
    esac
done
if [[ $# -eq 0 ]]; then
    echo "usage: $0 -np N [mpirun options] [--] PROGRAM [ARGS...]" >&2
    exit 2
fi

if [[ -z "${OPENBLAS_CORETYPE:-}" ]]; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    if [[ "$flags" == *avx512f* && "$flags" == *avx512bw* && "$flags" == *avx512vl* && "$flags" == *avx512dq* ]]; then
        export OPENBLAS_CORETYPE=SkylakeX
    elif [[ "$flags" == *avx2* && "$flags" == *fma* ]]; then
        export OPENBLAS_CORETYPE=Haswell
    fi
fi
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"

root_options=()
if [[ "$(id -u)" == "0" ]]; then root_options=(--allow-run-as-root); fi

# mpirun hands its ranks a pseudo-terminal whatever its own output is, so rank 0 cannot tell a
# terminal from a log file: say which (live: a redrawn progress block; plain: periodic lines).
if [[ -z "${ORTHOFUSE_PROGRESS:-}" ]]; then
    if [[ -t 1 ]]; then export ORTHOFUSE_PROGRESS=live; else export ORTHOFUSE_PROGRESS=plain; fi
fi

exported=(-x OPENBLAS_NUM_THREADS -x OMPI_MCA_pml -x ORTHOFUSE_PROGRESS)
if [[ -n "${OPENBLAS_CORETYPE:-}" ]]; then exported+=(-x OPENBLAS_CORETYPE); fi

exec mpirun "${root_options[@]}" --quiet --oversubscribe --bind-to none "${exported[@]}" \
    "${mpirun_options[@]}" "$@"
