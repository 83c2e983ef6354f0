#!/usr/bin/env bash
# Creates .venv and installs prefsweep into it. `scripts/setup.sh test` adds the test extras
# (and the system packages the browser/cluster tests use, when run as root with apt).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "$extras" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "prefsweep installed in .venv"
