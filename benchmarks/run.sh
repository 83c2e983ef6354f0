#!/usr/bin/env bash
# Runs every benchmark with the project's .venv, prints each table, then each headline on its
# own line. JSON results go to $BENCH_OUT when it is set. Needs the `bench` extra (TRL):
#   .venv/bin/pip install -e ".[bench]"
# Run it alone on the machine (it starts Ray): flock /tmp/prefsweep-ray.lock bash benchmarks/run.sh
# Options: BENCH_MODEL=tiny|gpt2 (default tiny: builtin:tiny-gpt2, the targets' model),
#          BENCH_THREADS=N (torch threads of the step benchmark; default 1),
#          BENCH_CLOCK=cpu|wall (step timings by process CPU time, the default, which other
#          processes on a shared machine barely move, or by wall clock),
#          BENCH_SIZES="5000 50000" (pairs of the start-up comparison).
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
if ! "$PY" -c "import trl" 2>/dev/null; then
  echo "benchmarks need TRL: .venv/bin/pip install -e '.[bench]'" >&2
  exit 1
fi
model="${BENCH_MODEL:-tiny}"
# Library progress bars and deprecation chatter would bury the tables.
export TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
export RAY_USAGE_STATS_ENABLED=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
quiet() { grep -v -e "^\[prefsweep" -e "Loading weights" -e "INFO " -e "WARNING " -e "^\[I " -e "^[│╭╰├]" \
  -e "^View detailed" -e "^To visualize" -e "^{'train_runtime'" -e "^$" || true; }
echo "machine: $(nproc) CPUs, $(uptime), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" bench_step.py --model "$model" --threads "${BENCH_THREADS:-1}" --clock "${BENCH_CLOCK:-cpu}" 2>&1 | quiet | tee -a "$log"
"$PY" bench_memory.py 2>&1 | tee -a "$log"
# shellcheck disable=SC2086
"$PY" bench_ray.py --sizes ${BENCH_SIZES:-5000 50000} 2>&1 | quiet | tee -a "$log"
"$PY" bench_sweep.py --model "$model" 2>&1 | quiet | tee -a "$log"
"$PY" bench_api.py 2>&1 | tee -a "$log"
echo
echo "## headlines ($(uptime))"
grep -E "^dpo step .*(x  \[|no headline)" "$log"
grep -E "^loss-path peak memory" "$log"
grep -E "^(tokenizations per study|study start-up, |second study reference passes|per-trial overhead on Ray)" "$log"
grep -E "^[0-9]+-trial sweep .*: [0-9.]+x$|^peak memory per trial|^reference passes in the" "$log"
grep -E "^GET /studies p99" "$log"
if [ -n "${BENCH_OUT:-}" ]; then echo "JSON in $BENCH_OUT"; fi
