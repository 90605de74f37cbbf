#!/usr/bin/env bash
# One script for a fresh GPU machine (Python + a CUDA torch; no fairseq, no network):
# the GPU correctness checks, then the benchmark of the tuning step and the fbank.
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu_check_out
# Prints everything; exits non-zero if a check fails or the benchmark does not finish.
# About 3-5 minutes on an H100/H200 (most of it torch.compile's first compilation);
# each stage has a time limit so the whole script stays under 8 minutes.
# GPU_CHECK_DEVICE=cpu runs the same stages on CPU at tiny shapes (the test suite does,
# so the script cannot rot).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BENCH_ARGS=(--device cuda --compile)
[ "$DEVICE" = cpu ] && BENCH_ARGS=(--device cpu --tiny)

DEVICE=$DEVICE "$PY" - <<'PY'
import os, platform, torch
print(f"python {platform.python_version()}  torch {torch.__version__}  cuda {torch.version.cuda}")
if os.environ["DEVICE"] == "cuda" and not torch.cuda.is_available():
    raise SystemExit("gpu_check.sh: torch sees no CUDA device; this script is for a GPU machine "
                     "(on CPU run: python benchmarks/bench_gpu.py --device cpu --tiny)")
for i in range(torch.cuda.device_count()):
    print(f"device {i}: {torch.cuda.get_device_name(i)}")
PY
[ $? -eq 0 ] || exit 1

status=0
echo "== correctness checks (benchmarks/cuda_checks.py)"
timeout 120 "$PY" benchmarks/cuda_checks.py --device "$DEVICE" 2>&1 | tee "$OUT/cuda_checks.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== tuning step and fbank (benchmarks/bench_gpu.py ${BENCH_ARGS[*]})"
timeout 330 "$PY" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}" --json "$OUT/bench_gpu.json" \
  2>&1 | tee "$OUT/bench_gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== results in $OUT/; exit status $status"
exit $status
