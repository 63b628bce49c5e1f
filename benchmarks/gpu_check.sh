#!/usr/bin/env bash
# GPU check, run on a machine with CUDA (the integrator's H200 run): installs the wheels that the
# machine lacks from .whl/ (see benchmarks/README or the closing note), then runs
#   1. the test suite (CUDA tests included; they skip on CPU-only machines),
#   2. benchmarks/gpu_smoke.py: every registered explainer on CUDA vs CPU, and timings,
#   3. any extra command given as arguments (e.g. the sharded-pass benchmark).
# Usage: bash benchmarks/gpu_check.sh [extra command...]; logs go to $OUT (or ./gpu-logs).
set -uo pipefail
OUT=${OUT:-gpu-logs}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg XGIR_CACHE=/tmp/xgir-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tail -25 | tee "$OUT/pytest.txt"
if [ -f benchmarks/gpu_smoke.py ]; then timeout 200 python3 benchmarks/gpu_smoke.py 2>&1 | tee "$OUT/smoke.txt"; fi
if [ $# -gt 0 ]; then timeout 240 "$@" 2>&1 | tee "$OUT/extra.txt"; fi
