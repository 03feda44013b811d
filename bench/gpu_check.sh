#!/usr/bin/env bash
# The GPU check (issue 17 §4): a whole round on one GPU (bf16; vLLM generation when installed) and
# the GPU benchmarks, with wall time and peak GPU memory per phase. See bench/gpu_check.py.
#   bash bench/gpu_check.sh [--cpu-smoke] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
exec "$PYTHON" bench/gpu_check.py "$@"
