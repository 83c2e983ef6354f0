#!/usr/bin/env bash
# Runs every benchmark with the project's .venv, prints each table, then each ratio on its
# own line. JSON results go to $BENCH_OUT when it is set. Needs the `bench` extra (TRL):
#   .venv/bin/pip install -e ".[bench]"
# Options: BENCH_MODEL=tiny|gpt2 (default tiny: builtin:tiny-gpt2, the targets' model),
#          BENCH_THREADS=N (torch threads of the step benchmark; default torch's choice),
#          BENCH_CLOCK=wall|cpu (step timings by wall clock, default, or by process CPU time,
#          which other processes on a shared machine barely move; use with BENCH_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
if ! "$PY" -c "import trl" 2>/dev/null; then
  echo "benchmarks need TRL: .venv/bin/pip install -e '.[bench]'" >&2
  exit 1
fi
model="${BENCH_MODEL:-tiny}"
threads=()
if [ -n "${BENCH_THREADS:-}" ]; then threads=(--threads "$BENCH_THREADS"); fi
# Library progress bars and deprecation chatter would bury the tables.
export TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
export RAY_USAGE_STATS_ENABLED=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" bench_step.py --model "$model" "${threads[@]}" ${BENCH_CLOCK:+--clock "$BENCH_CLOCK"} 2>&1 | grep -v -e "^\[prefsweep" -e "Loading weights" | tee -a "$log"
"$PY" bench_sweep.py --model "$model" 2>&1 | grep -v -e "^\[prefsweep" -e "Loading weights" -e "INFO " | tee -a "$log"
"$PY" bench_api.py 2>&1 | tee -a "$log"
echo
echo "## ratios"
grep -E ": [0-9.]+x$" "$log"
grep -E "^reference passes in the" "$log"
grep -E "^GET /studies p99" "$log"
if [ -n "${BENCH_OUT:-}" ]; then echo "JSON in $BENCH_OUT"; fi
