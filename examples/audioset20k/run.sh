#!/usr/bin/env bash
# AudioSet-20K (the balanced training set), from the downloaded clips to the numbers:
# manifests, uaMix tuning of a pretrained AudioMAE on the unlabelled training clips
# (configs/uamix_as20k.yaml, the paper's setting: 8 GPUs), the tuned encoder exported,
# then a linear probe (one-vs-rest logistic regression, mAP on the eval set) of the
# start and the tuned encoder with the fbank-stats baseline, and optionally
# (FINETUNE=1) full fine-tuning of the tuned encoder (configs/finetune_as20k.yaml).
#
# Usage:
#   examples/audioset20k/run.sh AUDIOSET_DIR ENCODER OUT_DIR
#
#   AUDIOSET_DIR  balanced_train_segments.csv, eval_segments.csv,
#                 class_labels_indices.csv and the clips (under AUDIOSET_DIR/audio, or
#                 AUDIO_DIR=...; found by YouTube id, see uamix-prepare audioset -h)
#   ENCODER       the pretrained AudioMAE to tune (e.g. the official
#                 pretrained.pth of AudioMAE's AudioSet-2M pretraining)
#   OUT_DIR       OUT_DIR/data, OUT_DIR/tune (checkpoints, train.log, tensorboard
#                 through the config), OUT_DIR/encoders/uamix.pth, OUT_DIR/probe,
#                 OUT_DIR/finetune
#
# Environment (besides examples/common.sh's): AUDIO_DIR, FINETUNE=1, TUNE_OVERRIDES
# (key=value overrides of the tuning run only, split on spaces), PROBE_ARGS (extra
# uamix-probe arguments, e.g. "--device cuda").

set -euo pipefail
source "$(dirname "$0")/../common.sh"
[ $# -eq 3 ] || usage
SRC=$(need_dir "$1" AUDIOSET_DIR)
ENCODER=$(need_file "$2" ENCODER)
OUT=$(out_dir "$3")
read -r -a PROBE <<< "${PROBE_ARGS:-}"
read -r -a TUNE <<< "${TUNE_OVERRIDES:-}"

"$PYTHON" -m uamix_fairseq.prepare audioset "$SRC" "$OUT/data" \
    --split train=balanced_train_segments.csv --split eval=eval_segments.csv \
    --audio-dir "${AUDIO_DIR:-$SRC/audio}"
train uamix_as20k "$OUT/tune" "task.data=$OUT/data" "dataset.valid_subset=eval" \
    "model.audiomae_checkpoint=$ENCODER" "${TUNE[@]}"
mkdir -p "$OUT/encoders"
"$PYTHON" -m uamix_fairseq.tools.export "$OUT/tune/checkpoints/checkpoint_last.pt" \
    "$OUT/encoders/uamix.pth"
"$PYTHON" -m uamix_fairseq.evaluation.probe --train-manifest "$OUT/data/train.tsv" \
    --test-manifest "$OUT/data/eval.tsv" --encoder "$ENCODER" --name start \
    --encoder "$OUT/encoders/uamix.pth" --name uamix --baseline fbank_stats \
    --out "$OUT/probe" --no-progress "${PROBE[@]}"
if [ "${FINETUNE:-0}" = 1 ]; then
    train finetune_as20k "$OUT/finetune" "task.data=$OUT/data" "dataset.train_subset=train" \
        "dataset.valid_subset=eval" "model.encoder_checkpoint=$OUT/encoders/uamix.pth"
fi
