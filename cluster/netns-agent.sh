#!/usr/bin/env bash
# netns-agent.sh: OpenMPI's plm_rsh_agent for the simulated hosts of netns-hosts.sh: instead of
# ssh-ing to HOST (10.77.0.I), runs the daemon's command inside namespace ofhI with its own
# hostname (a new UTS namespace) and temporary directory.
# OpenMPI calls it as: AGENT [ssh-style options] HOST <command words, shell-quoted>.
set -euo pipefail
while [[ $# -gt 0 && "$1" == -* ]]; do shift; done
host="$1"; shift
index="${host##*.}"
exec ip netns exec "ofh$index" unshare --uts sh -c \
    "hostname ofh$index && export TMPDIR=/tmp/ofh$index OMPI_MCA_orte_tmpdir_base=/tmp/ofh$index && $*"
