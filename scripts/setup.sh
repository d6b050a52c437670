#!/usr/bin/env bash
# setup.sh: installs the Debian packages orthofuse needs when any is missing (idempotent).
set -euo pipefail

packages=(libopenmpi-dev openmpi-bin libopenblas-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev pkg-config)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing: ${missing[*]}"
    sudo_cmd=()
    if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
