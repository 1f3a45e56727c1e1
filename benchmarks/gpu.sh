#!/usr/bin/env bash
# For users with an NVIDIA GPU: proves that bids_encoder computes on the GPU, runs the GPU tests and prints one
# table of CPU and GPU wall times side by side. Without a GPU the GPU steps are reported as skipped (exit 0).
#
#   bash benchmarks/gpu.sh            # GPU check, `pytest -m gpu`, Szinte + whole-brain pRF benchmarks
#   bash benchmarks/gpu.sh --smoke    # the same with a small synthetic problem only (a minute on a CPU)
#
# Environment: PYTHON (default python3), BIDS_ENCODER_SZINTE_DIR (the Szinte rows need it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=""
if [[ "${1:-}" == "--smoke" ]]; then
  SMOKE="--smoke"
fi

echo "== 1. devices"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version --format=csv || true
else
  echo "nvidia-smi: not found"
fi
HAS_GPU=yes
"$PYTHON" benchmarks/gpu_table.py --check || status=$?
case "${status:-0}" in
  0) ;;
  3) HAS_GPU=no ;;
  *) echo "the device check failed" >&2; exit 1 ;;
esac

echo "== 2. GPU tests (pytest -m gpu)"
if [[ "$HAS_GPU" == yes ]]; then
  "$PYTHON" -m pytest -q -n 0 -m gpu tests/test_gpu.py
else
  echo "skipped: no GPU visible to TensorFlow"
fi

echo "== 3. CPU and GPU side by side"
"$PYTHON" benchmarks/gpu_table.py --gpu "$HAS_GPU" $SMOKE
