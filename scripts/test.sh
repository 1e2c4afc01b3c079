#!/usr/bin/env bash
# Run the test suite in its own virtual environment (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
# one worker per core (at most 4): each runs torch on one thread (tests/conftest.py)
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadgroup "$@"
