#!/usr/bin/env bash
# render_report.sh: render a run's report.html in headless Chromium and save a screenshot, to see
# the page as a browser draws it (Debian: apt-get install -y chromium).
#
# Usage: scripts/render_report.sh RUN_DIR [SCREENSHOT.png] [WIDTH,HEIGHT]
#        (defaults: /tmp/report.png, 1400,3000)
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 RUN_DIR [SCREENSHOT.png] [WIDTH,HEIGHT]" >&2
    exit 2
fi
run_dir=$(cd "$1" && pwd)
screenshot=${2:-/tmp/report.png}
size=${3:-1400,3000}
page="$run_dir/report.html"
if [[ ! -f "$page" ]]; then
    echo "$page: missing (orthofuse report $1 writes it)" >&2
    exit 1
fi
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
    echo "no chromium found (Debian: apt-get install -y chromium)" >&2
    exit 1
fi
# A throw-away profile: no state from, or into, the user's browser.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$screenshot" --window-size="$size" "file://$page" 2>/dev/null
echo "$screenshot"
