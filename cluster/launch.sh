#!/usr/bin/env bash
# launch.sh: the one place that knows the mpirun flags orthofuse needs on this kind of machine.
#
# Usage: cluster/launch.sh -np N [--max-restarts R] [--hostfile FILE] [more mpirun options] -- PROGRAM [ARGS...]
#        cluster/launch.sh -np N PROGRAM [ARGS...]
#
# --max-restarts R: when a rank dies of a signal (kill -9, out of memory, a lost node) or hangs
# (rank 0's heartbeat check ends the job with MPI_Abort code 3: mpirun exits 3), run the same
# command again, up to R times; `orthofuse run` and `sweep` resume where they stopped. A job
# error (exit code 1: a bad input, a failed task) is not retried, nor is a preempted job (exit
# code 75, after SIGUSR1 to mpirun: every training rank checkpointed; the batch system requeues
# it). Each failure's root cause (the first rank that failed, its host, its signal or exit code)
# is printed in one line.
#
# - root needs --allow-run-as-root; more ranks than cores need --oversubscribe;
# - --bind-to none: otherwise OpenMPI pins every rank of a small machine to one core;
# - pml ob1: MPI_Init about 3x faster here than the default (ucx probing);
# - OpenBLAS: one thread per rank (ranks are the parallelism); one kernel family for every rank,
#   the one orthofuse chooses for this host's CPU (`orthofuse doctor --blas-env`), unless
#   OPENBLAS_CORETYPE is set: GEMMs of two families round differently, so task vectors would
#   depend on placement. A rank whose CPU cannot run it stops with one line saying what to set;
#   a job whose ranks still differ (mpirun started another way) says so in its log;
# - mpirun's help blocks are kept off the terminal: orthofuse's rank 0 prints the one line that says
#   what happened (a job error, or "the job was stopped" when another rank died); when it could not
#   (rank 0 itself was killed), this script prints the cause it read from mpirun's notice.
set -euo pipefail

mpirun_options=()
max_restarts=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; break ;;
        --max-restarts)
            if [[ ! "${2:-}" =~ ^[0-9]+$ ]]; then echo "launch.sh: --max-restarts needs a count (0 or more)" >&2; exit 2; fi
            max_restarts="$2"; shift 2 ;;
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
# The kernel family: the user's, else the one orthofuse picks for this host's CPU, for every rank.
if [[ -z "${OPENBLAS_CORETYPE:-}" && "$(basename "$1")" == orthofuse && -x "$1" ]]; then
    coretype=$("$1" doctor --blas-env 2>/dev/null | sed -n 's/^OPENBLAS_CORETYPE=//p' || true)
    if [[ -n "$coretype" ]]; then export OPENBLAS_CORETYPE="$coretype"; fi
fi
if [[ -n "${OPENBLAS_CORETYPE:-}" ]]; then exported+=(-x OPENBLAS_CORETYPE); fi

notice=$(mktemp) passed=$(mktemp)
trap 'rm -f "$notice" "$passed"' EXIT

# One mpirun; its stderr is split: the dashed notice blocks go to $notice, every other line to the
# terminal and to $passed, but for mpirun's own note on a forwarded SIGUSR1 (orthofuse says it).
run_once() {
    set +e
    { mpirun "${root_options[@]}" --oversubscribe --bind-to none "${exported[@]}" "${mpirun_options[@]}" "$@" \
        2>&1 1>&3 3>&- | awk -v notice="$notice" -v passed="$passed" '
            /^-----+$/ { block = !block; next }
            block { print > notice; fflush(notice); next }
            /^mpirun: Forwarding signal [0-9]+ to job$/ { next }
            { print > "/dev/stderr"; print > passed; fflush("/dev/stderr"); fflush(passed) }'
      status=${PIPESTATUS[0]}; } 3>&1
    set -e
}

# The first failing rank as mpirun's notice names it; sets cause and cause_kind (signal or exit).
read_cause() {
    local line
    cause="mpirun exited with code $status" cause_kind=exit
    line=$(grep -m1 -E 'noticed that process rank [0-9]+ with PID [0-9]+ on node [^ ]+ exited on signal' "$notice" || true)
    if [[ "$line" =~ rank\ ([0-9]+)\ with\ PID\ [0-9]+\ on\ node\ ([^ ]+)\ exited\ on\ signal\ ([0-9]+)\ ?(\(.*\))? ]]; then
        cause="rank ${BASH_REMATCH[1]} on host ${BASH_REMATCH[2]} was killed by signal ${BASH_REMATCH[3]} ${BASH_REMATCH[4]}"
        cause_kind=signal
        return
    fi
    # Rank 0 ended the job because a worker went silent (hung, or its host unreachable): MPI_Abort
    # with code 3, which mpirun returns (its notice may be missing: it can fail to print it).
    if [[ $status -eq 3 ]]; then
        cause="rank 0 ended the job: a rank stopped sending heartbeats (hung, or its host unreachable)"
        cause_kind=hang
        return
    fi
    local rank code
    rank=$(grep -m1 -oE 'Process name: +\[\[[0-9]+,[0-9]+\],[0-9]+\]' "$notice" | grep -oE '[0-9]+\]$' | tr -d ']' || true)
    code=$(grep -m1 -oE 'Exit code: +[0-9]+' "$notice" | grep -oE '[0-9]+$' || true)
    if [[ -n "$rank" && -n "$code" ]]; then cause="rank $rank exited with code $code"; fi
}

attempt=0
while true; do
    : > "$notice"
    : > "$passed"
    run_once "$@"
    if [[ $status -eq 0 ]]; then exit 0; fi
    # 75: preempted (SIGUSR1; orthofuse's rank 0 said so): the caller requeues, not this script.
    if [[ $status -eq 75 ]]; then
        if ! grep -q "orthofuse: the job was preempted" "$passed"; then echo "launch.sh: the job was preempted (exit code 75); rerun it to resume" >&2; fi
        exit 75
    fi
    read_cause
    if [[ "$cause_kind" == signal || "$cause_kind" == hang ]] && [[ $attempt -lt $max_restarts ]]; then
        attempt=$((attempt + 1))
        echo "launch.sh: $cause; restarting ($attempt of $max_restarts), the job resumes" >&2
        continue
    fi
    # orthofuse's rank 0 already said what happened unless it was the one that died.
    if ! grep -q "orthofuse: error:" "$passed"; then echo "launch.sh: the job failed: $cause" >&2; fi
    exit "$status"
done
