#!/usr/bin/env bash
# Create .venv (if missing) and install xaikit with what the demo and the tests need.
# torch is pinned first so that no other requirement pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, xaikit, efficientnet_lite_pytorch, pytest" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.xaikit-installed ]; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  touch .venv/.xaikit-installed
fi
# headless Chromium for the browser tests (tests/test_report_browser.py, tests/test_serve_browser.py: Playwright
# drives this system Chromium, it downloads no browser); the demo does not need it
if [ -z "${XAIKIT_NO_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  bash scripts/install-chromium.sh || echo "setup-env: could not install chromium; tests/test_report_browser.py will fail" >&2
fi
