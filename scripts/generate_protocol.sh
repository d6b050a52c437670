#!/usr/bin/env bash
# generate_protocol.sh: regenerates the committed C code of proto/orthofuse.proto with protoc-c.
# Usage: scripts/generate_protocol.sh [OUTPUT_DIR]   (default: Sources/CControlProtocol)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-Sources/CControlProtocol}"
mkdir -p "$out/include"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
protoc-c --proto_path=proto --c_out="$work" proto/orthofuse.proto
# SwiftPM wants public headers under include/; the .c file includes "orthofuse.pb-c.h".
mv "$work/orthofuse.pb-c.h" "$out/include/orthofuse.pb-c.h"
mv "$work/orthofuse.pb-c.c" "$out/orthofuse.pb-c.c"
