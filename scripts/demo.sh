#!/usr/bin/env bash
# The main job: explain the bundled EfficientNet-Lite0 on scikit-image photos and write the results to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python examples/demo.py "$@"
