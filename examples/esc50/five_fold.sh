#!/usr/bin/env bash
# ESC-50 five-fold cross-validation: fine-tune on four folds, validate on the fifth, for
# each fold, with configs/finetune_esc50.yaml; then average each fold's best accuracy.
#
# Usage:
#   examples/esc50/five_fold.sh DATA_DIR ENCODER OUT_DIR [fairseq-hydra-train overrides...]
#
#   DATA_DIR  manifests fold{1..5}_train.tsv / fold{1..5}_test.tsv with their .label files
#             (python -m uamix_fairseq.prepare esc50 ESC-50-master DATA_DIR)
#   ENCODER   the encoder to fine-tune (AudioMAE .pth or a fairseq checkpoint of this plugin)
#   OUT_DIR   fold f trains in OUT_DIR/fold{f} (checkpoints, train.log); the summary goes
#             to OUT_DIR/esc50_5fold.json and the screen
#
# Example:
#   examples/esc50/five_fold.sh /data/esc50 /ckpt/pretrained.pth /exp/esc50 \
#       distributed_training.distributed_world_size=1
#
# Running it again resumes: each fold continues from its checkpoint_last.pt (a finished
# fold stops at once). A fold's score is the best value of the config's
# checkpoint.best_checkpoint_metric (accuracy), as fairseq records it in the checkpoint.
#
# Environment:
#   FOLDS            folds to run (default: "1 2 3 4 5")
#   CONFIG           config name in configs/ (default: finetune_esc50)
#   UAMIX_TRAIN_CMD  training command (default: fairseq-hydra-train); split on spaces
#   PYTHON           python for the summary (default: python3)

set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

[ $# -ge 3 ] || usage
DATA_DIR=$(cd "$1" && pwd) || { echo "five_fold.sh: DATA_DIR '$1' is not a folder" >&2; exit 2; }
[ -f "$2" ] || { echo "five_fold.sh: ENCODER '$2' does not exist" >&2; exit 2; }
ENCODER=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
mkdir -p "$3"
OUT_DIR=$(cd "$3" && pwd)
shift 3

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FOLDS=${FOLDS:-"1 2 3 4 5"}
CONFIG=${CONFIG:-finetune_esc50}
PYTHON=${PYTHON:-python3}
read -r -a TRAIN_CMD <<< "${UAMIX_TRAIN_CMD:-fairseq-hydra-train}"

# Every fold's files first: better to stop now than after four hours of training.
for f in $FOLDS; do
    for split in "fold${f}_train" "fold${f}_test"; do
        for ext in tsv label; do
            [ -f "$DATA_DIR/$split.$ext" ] || {
                echo "five_fold.sh: $DATA_DIR/$split.$ext is missing; make the manifests with" \
                     "'python -m uamix_fairseq.prepare esc50 ESC-50-master $DATA_DIR'" >&2
                exit 2
            }
        done
    done
done

for f in $FOLDS; do
    dir="$OUT_DIR/fold$f"
    mkdir -p "$dir"
    echo "=== fold $f: train on fold${f}_train, validate on fold${f}_test -> $dir"
    set +e
    "${TRAIN_CMD[@]}" --config-dir "$REPO/configs" --config-name "$CONFIG" \
        "task.data=$DATA_DIR" "model.encoder_checkpoint=$ENCODER" \
        "common.user_dir=$REPO/uamix_fairseq" "checkpoint.save_dir=$dir" \
        "hydra.run.dir=$dir" "dataset.train_subset=fold${f}_train" \
        "dataset.valid_subset=fold${f}_test" "$@" 2>&1 | tee "$dir/train.log"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "five_fold.sh: fold $f failed (exit $status); see $dir/train.log" >&2
        exit "$status"
    fi
done

"$PYTHON" - "$OUT_DIR" $FOLDS <<'EOF'
import json
import math
import os
import sys

import torch

out_dir, folds = sys.argv[1], sys.argv[2:]
scores, metric = {}, None
for f in folds:
    path = os.path.join(out_dir, f"fold{f}", "checkpoint_last.pt")
    # A fairseq checkpoint this script's own run wrote (it holds the config object).
    state = torch.load(path, map_location="cpu", weights_only=False)
    best = state["extra_state"].get("best")
    if best is None:
        sys.exit(f"five_fold.sh: {path} records no best score (no validation ran?)")
    metric = state["cfg"]["checkpoint"]["best_checkpoint_metric"]
    scores[f] = float(best)
values = list(scores.values())
mean = sum(values) / len(values)
std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
summary = {"metric": metric, "folds": scores, "mean": mean, "std": std,
           "num_folds": len(values), "out_dir": out_dir}
with open(os.path.join(out_dir, "esc50_5fold.json"), "w") as fh:
    json.dump(summary, fh, indent=2)
print(f"ESC-50 {len(values)}-fold best {metric}:")
for f, v in scores.items():
    print(f"  fold {f}: {v:.2f}")
print(f"  mean:   {mean:.2f} (std {std:.2f} over folds)")
print(f"summary: {os.path.join(out_dir, 'esc50_5fold.json')}")
EOF
