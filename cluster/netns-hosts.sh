#!/usr/bin/env bash
# netns-hosts.sh: simulates several hosts on one machine with network namespaces, for testing
# orthofuse across hosts over TCP (root only; iproute2 and util-linux).
#
#   cluster/netns-hosts.sh up 3          # namespaces ofh1..ofh3 on bridge ofbr0, 10.77.0.1..3/24
#   cluster/netns-hosts.sh run 3 -- PROGRAM ARGS...   # mpirun one rank per host
#   cluster/netns-hosts.sh cut 2 | restore 2          # take host 2's link down / up
#   cluster/netns-hosts.sh down 3
#
# Each host gets its own hostname and temporary directory (cluster/netns-agent.sh): without them
# OpenMPI's session directories and shared-memory segments collide between "hosts". Between
# hosts only TCP is used; keepalives make a cut link fail in seconds instead of minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
subnet_prefix=10.77.0
bridge=ofbr0

command="${1:-}"; shift || true
count="${1:-3}"; shift || true

up() {
    ip link show "$bridge" >/dev/null 2>&1 || {
        ip link add "$bridge" type bridge
        ip addr add "$subnet_prefix.254/24" dev "$bridge"
        ip link set "$bridge" up
    }
    for i in $(seq 1 "$count"); do
        ns="ofh$i"
        ip netns list | grep -qw "$ns" && continue
        ip netns add "$ns"
        ip link add "ofv$i" type veth peer name "ofp$i"
        ip link set "ofp$i" netns "$ns"
        ip link set "ofv$i" master "$bridge"
        ip link set "ofv$i" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip addr add "$subnet_prefix.$i/24" dev "ofp$i"
        ip netns exec "$ns" ip link set "ofp$i" up
        mkdir -p "/tmp/ofh$i"
    done
}

down() {
    for i in $(seq 1 "$count"); do
        ip netns del "ofh$i" 2>/dev/null || true
        ip link del "ofv$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
}

run() {
    [[ "${1:-}" == "--" ]] && shift
    hostfile=$(mktemp)
    trap 'rm -f "$hostfile"' RETURN
    for i in $(seq 1 "$count"); do echo "$subnet_prefix.$i slots=1" >> "$hostfile"; done
    export OPENBLAS_NUM_THREADS=1
    local blas=(-x OPENBLAS_NUM_THREADS)
    # One kernel family on every rank: orthofuse's choice for this CPU (the program is "$1").
    if [[ -z "${OPENBLAS_CORETYPE:-}" && "$(basename "${1:-}")" == orthofuse && -x "$1" ]]; then
        OPENBLAS_CORETYPE=$("$1" doctor --blas-env | sed -n 's/^OPENBLAS_CORETYPE=//p' || true)
        if [[ -n "$OPENBLAS_CORETYPE" ]]; then export OPENBLAS_CORETYPE; else unset OPENBLAS_CORETYPE; fi
    fi
    if [[ -n "${OPENBLAS_CORETYPE:-}" ]]; then blas+=(-x OPENBLAS_CORETYPE); fi
    mpirun --allow-run-as-root --bind-to none -np "$count" --hostfile "$hostfile" \
        --mca plm_rsh_agent "$PWD/cluster/netns-agent.sh" \
        --mca pml ob1 --mca btl self,tcp \
        --mca btl_tcp_if_include "$subnet_prefix.0/24" --mca oob_tcp_if_include "$subnet_prefix.0/24" \
        --mca mpi_yield_when_idle 1 \
        --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3 \
        "${blas[@]}" -x PATH \
        "$@"
}

case "$command" in
    up) up ;;
    down) down ;;
    run) run "$@" ;;
    cut) ip link set "ofv$count" down ;;
    restore) ip link set "ofv$count" up ;;
    *) echo "usage: $0 up|down N | run N -- PROGRAM ARGS... | cut|restore HOST" >&2; exit 2 ;;
esac
