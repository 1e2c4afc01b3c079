#!/usr/bin/env bash
# The main job: the default HTML report, written to out/report/index.html:
#   heatmaps of EfficientNet-Lite0 on scikit-image photos (chelsea, coffee, astronaut, rocket) with the main
#   methods and their top concepts (CRP), the methods x metrics table on the ground-truth data set, explanation
#   by example on it (neighbours, pertinent positive/negative), and a MiniLM sentiment example.
# Extra arguments go to `xaikit report` (see `xaikit report --help` and docs/cli.md).
# One torch thread: on a 2-core machine that is busy with other work, two threads wait on each other and the
# report takes many times longer (benchmarks/results/cli.md); `bash scripts/demo.sh --threads 2` overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
XAIKIT_NO_BROWSER=1 bash scripts/setup-env.sh
exec .venv/bin/xaikit report --out out/report --threads 1 "$@"
