#!/usr/bin/env bash
# ESC-50, from the downloaded ESC-50-master folder to the numbers: manifests, five-fold
# fine-tuning (configs/finetune_esc50.yaml, the mean of each fold's best accuracy) and
# 5-way few-shot accuracy of the frozen encoder with the fbank-stats baseline.
#
# Usage:
#   examples/esc50/run.sh ESC50_MASTER ENCODER OUT_DIR
#
#   ESC50_MASTER  the dataset as distributed (meta/esc50.csv, audio/*.wav at 44.1 kHz)
#   ENCODER       the encoder to evaluate (an AudioMAE .pth, e.g. one exported after
#                 uaMix tuning, or a fairseq checkpoint of this plugin)
#   OUT_DIR       OUT_DIR/data (manifests), OUT_DIR/finetune/fold{1..5} and
#                 OUT_DIR/finetune/esc50_5fold.json, OUT_DIR/fewshot (table, plot)
#
# Environment (besides examples/common.sh's): FOLDS (default "1 2 3 4 5"),
# FEWSHOT_ARGS (default "--ways 5 --shots 1 5 --queries 15 --episodes 600"),
# SKIP_FINETUNE=1 to run the few-shot evaluation only.

set -euo pipefail
source "$(dirname "$0")/../common.sh"
[ $# -eq 3 ] || usage
SRC=$(need_dir "$1" ESC50_MASTER)
ENCODER=$(need_file "$2" ENCODER)
OUT=$(out_dir "$3")

"$PYTHON" -m uamix_fairseq.prepare esc50 "$SRC" "$OUT/data"
if [ "${SKIP_FINETUNE:-0}" != 1 ]; then
    bash "$REPO/examples/esc50/five_fold.sh" "$OUT/data" "$ENCODER" "$OUT/finetune" \
        "${EXTRA_OVERRIDES[@]}"
fi
# 5 s clips at 44.1 kHz: resampled to 16 kHz, 512 frames, ESC-50's fbank statistics.
fewshot "$OUT/data/all.tsv" "$OUT/fewshot" "--ways 5 --shots 1 5 --queries 15 --episodes 600" \
    --encoder "$ENCODER" --resample --num-frames 512 --norm esc50
