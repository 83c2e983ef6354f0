#!/usr/bin/env bash
# The GPU path on this machine's GPUs: bf16 autocast, SDPA, torch.compile, DDP through Ray Train
# (every visible GPU), fractional GPUs per trial, our step vs TRL's DPOTrainer on a GPT-2-sized
# model with tokens/s and MFU. One line per check; exits with the number that failed.
# Needs a CUDA build of torch in .venv (scripts/setup.sh installs the CPU one) and TRL:
#   .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu126   # or your CUDA
#   .venv/bin/pip install -e ".[bench]"
# Options: GPU_CHECK_MODEL=gpt2|tiny, GPU_CHECK_STEPS=N, GPU_CHECK_PEAK_TFLOPS=N (for MFU; known
# devices are looked up by name). Record what it prints in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
export TQDM_DISABLE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore RAY_USAGE_STATS_ENABLED=0
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" gpu_check.py --device cuda --model "${GPU_CHECK_MODEL:-gpt2}" --steps "${GPU_CHECK_STEPS:-20}" \
  ${GPU_CHECK_PEAK_TFLOPS:+--peak-tflops "$GPU_CHECK_PEAK_TFLOPS"}
