#!/usr/bin/env bash
# Speech Commands v2, from the extracted archive to the numbers: manifests,
# fine-tuning (configs/finetune_spc2.yaml) with its test accuracy (fairseq-validate on
# the official test list), and 5-way few-shot accuracy of the frozen encoder on the test
# clips with the fbank-stats baseline.
#
# Usage:
#   examples/speechcommands/run.sh SPC_DIR ENCODER OUT_DIR
#
#   SPC_DIR   the extracted speech_commands_v0.02 (<word>/*.wav, validation_list.txt,
#             testing_list.txt)
#   ENCODER   the encoder to evaluate (AudioMAE .pth or a fairseq checkpoint of this plugin)
#   OUT_DIR   OUT_DIR/data, OUT_DIR/finetune (checkpoints, train.log, test.log),
#             OUT_DIR/fewshot
#
# Environment (besides examples/common.sh's): FEWSHOT_ARGS (default "--ways 5
# --shots 1 5 --queries 15 --episodes 600"), SKIP_FINETUNE=1 for the few-shot part only.

set -euo pipefail
source "$(dirname "$0")/../common.sh"
[ $# -eq 3 ] || usage
SRC=$(need_dir "$1" SPC_DIR)
ENCODER=$(need_file "$2" ENCODER)
OUT=$(out_dir "$3")

"$PYTHON" -m uamix_fairseq.prepare speechcommands "$SRC" "$OUT/data"
if [ "${SKIP_FINETUNE:-0}" != 1 ]; then
    train finetune_spc2 "$OUT/finetune" "task.data=$OUT/data" "model.encoder_checkpoint=$ENCODER"
    # The best checkpoint on valid, scored on the official test list.
    VALIDATE=$(dirname "${TRAIN_CMD[0]}")/fairseq-validate
    [ -x "$VALIDATE" ] || VALIDATE=fairseq-validate
    "$VALIDATE" "$OUT/data" --path "$OUT/finetune/checkpoints/checkpoint_best.pt" \
        --task uamix_audio_classification --user-dir "$REPO/uamix_fairseq" \
        --valid-subset test --batch-size 64 ${VALIDATE_ARGS:-} 2>&1 | tee "$OUT/finetune/test.log"
fi
fewshot "$OUT/data/test.tsv" "$OUT/fewshot" "--ways 5 --shots 1 5 --queries 15 --episodes 600" \
    --encoder "$ENCODER" --num-frames 128 --norm speechcommands
