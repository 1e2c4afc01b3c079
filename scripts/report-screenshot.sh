#!/usr/bin/env bash
# Screenshot of an HTML report with headless Chromium: report-screenshot.sh [REPORT_DIR] [PNG] [WIDTH,HEIGHT]
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-out/report}
PNG=${2:-docs/report.png}
SIZE=${3:-1400,1300}
command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$PROFILE" \
  --window-size="$SIZE" --screenshot="$(realpath -m "$PNG")" "file://$(realpath "$REPORT")/index.html" 2>/dev/null
echo "wrote $PNG"
