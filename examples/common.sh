# Shared by the recipe scripts of examples/<dataset>/ (sourced, not run).
#
# Environment every recipe reads:
#   UAMIX_TRAIN_CMD  training command (default: fairseq-hydra-train); split on spaces
#   TRAIN_OVERRIDES  extra key=value overrides for every training run, after the
#                    recipe's own, split on spaces (so no spaces inside a value: write
#                    "model.freeze_schedule='[(0,0),(100,6)]'")
#   PYTHON           python for the tools (default: python3)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
read -r -a TRAIN_CMD <<< "${UAMIX_TRAIN_CMD:-fairseq-hydra-train}"
read -r -a EXTRA_OVERRIDES <<< "${TRAIN_OVERRIDES:-}"

usage() {  # the script's opening comment block, then exit 2
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

fail() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

need_dir() {  # need_dir PATH WHAT: the absolute path of an existing folder
    [ -d "$1" ] || fail "$2 '$1' is not a folder"
    (cd "$1" && pwd)
}

need_file() {  # need_file PATH WHAT: the absolute path of an existing file
    [ -f "$1" ] || fail "$2 '$1' does not exist"
    echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
}

out_dir() {  # out_dir PATH: create it, print its absolute path
    mkdir -p "$1" && (cd "$1" && pwd)
}

train() {  # train CONFIG RUN_DIR key=value...: one fairseq-hydra-train run, log in RUN_DIR
    local config=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    echo "=== $config -> $dir"
    "${TRAIN_CMD[@]}" --config-dir "$REPO/configs" --config-name "$config" \
        "common.user_dir=$REPO/uamix_fairseq" "checkpoint.save_dir=$dir/checkpoints" \
        "hydra.run.dir=$dir" "$@" "${EXTRA_OVERRIDES[@]}" 2>&1 | tee "$dir/train.log" \
        || fail "training with configs/$config.yaml failed; see $dir/train.log"
}

fewshot() {  # fewshot MANIFEST OUT_DIR "DEFAULT EPISODE ARGS" uamix-fewshot-args...:
    # N-way k-shot of the given encoders with the fbank-stats baseline into OUT_DIR;
    # FEWSHOT_ARGS (split on spaces) replaces the recipe's default episode arguments
    local manifest=$1 out=$2 episodes
    read -r -a episodes <<< "${FEWSHOT_ARGS:-$3}"
    shift 3
    "$PYTHON" -m uamix_fairseq.evaluation.fewshot --manifest "$manifest" "$@" \
        --baseline fbank_stats --out "$out" --no-progress "${episodes[@]}"
}
