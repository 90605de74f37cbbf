#!/usr/bin/env bash
# VoxCeleb1 speaker N-way k-shot, as in the paper's figures: manifests from the
# identification split, then few-shot accuracy of frozen encoders on the test speakers'
# clips (5- and 10-way, 1 and 5 shots by default), paired against the first encoder,
# with the fbank-stats baseline.
#
# Usage:
#   examples/voxceleb1/run.sh VOX1_DIR OUT_DIR ENCODER [ENCODER ...]
#
#   VOX1_DIR  the dataset as distributed (iden_split.txt, wav/<id>/<video>/<n>.wav);
#             AUDIO_DIRS="dir1 dir2" when the dev and test archives are extracted apart
#   OUT_DIR   OUT_DIR/data (manifests; missing clips listed), OUT_DIR/fewshot
#   ENCODER   encoders to compare (e.g. the MAE you started from, then the tuned one);
#             each is named after its file
#
# Environment (besides examples/common.sh's): FEWSHOT_ARGS (default "--ways 5 10
# --shots 1 5 --queries 5 --episodes 600"), NUM_FRAMES (default 1024: 10 s crops).

set -euo pipefail
source "$(dirname "$0")/../common.sh"
[ $# -ge 3 ] || usage
SRC=$(need_dir "$1" VOX1_DIR)
OUT=$(out_dir "$2")
shift 2
audio=()
for d in ${AUDIO_DIRS:-}; do audio+=(--audio-dir "$d"); done

"$PYTHON" -m uamix_fairseq.prepare voxceleb1 "$SRC" "$OUT/data" "${audio[@]}"
encoders=()
for e in "$@"; do
    path=$(need_file "$e" ENCODER)
    encoders+=(--encoder "$path" --name "$(basename "${path%.*}")")
done
fewshot "$OUT/data/test.tsv" "$OUT/fewshot" "--ways 5 10 --shots 1 5 --queries 5 --episodes 600" \
    "${encoders[@]}" --num-frames "${NUM_FRAMES:-1024}"
