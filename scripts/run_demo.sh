#!/usr/bin/env bash
# The main job on the embedded default, on CPU: install, generate the demo corpus,
# tune the AudioMAE shipped in pretrained/ with uaMix (and without mixtures for
# comparison; --start scratch pretrains one on the corpus first), and evaluate all
# encoders few-shot on held-out classes.
#   bash scripts/run_demo.sh [OUT_DIR] [--start shipped|scratch] [--quick] [--joint] [--seed N] [--overwrite]
# Everything lands in OUT_DIR (default ./demo_run): corpus/, <stage>/checkpoints,
# encoders/, tensorboard/, logs/, fewshot/ (table, CSV, JSON, plot), results.json.
# See `python examples/demo/demo_pipeline.py --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_run}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}

bash scripts/install.sh
# The demo models are small: one torch thread per process is faster than two threads
# that wait on each other whenever anything else runs on the machine (README,
# Performance).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" examples/demo/demo_pipeline.py "$OUT" "$@"
