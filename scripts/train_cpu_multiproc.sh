#!/usr/bin/env bash
# Data-parallel training on the CPUs of one machine: one fairseq-hydra-train process per
# rank, talking over gloo on 127.0.0.1.
#
# Usage:
#   scripts/train_cpu_multiproc.sh [--watchdog SECONDS] NPROC [fairseq-hydra-train args...]
#
# Example:
#   scripts/train_cpu_multiproc.sh 2 --config-dir configs --config-name demo \
#       task.data=/data/corpus model.audiomae_checkpoint=/data/tiny.pth \
#       common.user_dir=$PWD/uamix_fairseq checkpoint.save_dir=/data/ckpt
#
# Every rank gets these defaults, unless you set the key yourself:
#   common.cpu=true distributed_training.distributed_backend=gloo
#   distributed_training.ddp_backend=legacy_ddp distributed_training.device_id=0
# (ddp_backend c10d/pytorch_ddp is refused: on CPU fairseq's c10d path fails.)
# and these (managed here; passing them yourself is an error):
#   distributed_training.distributed_init_method=tcp://127.0.0.1:PORT
#   distributed_training.distributed_no_spawn=true
#   distributed_training.distributed_rank=R distributed_training.distributed_world_size=NPROC
# torchrun and fairseq's own spawning assume CUDA devices; this is the CPU route.
# dataset.batch_size is per rank: the contrastive loss sees NPROC x batch_size clips
# per update (negatives are gathered across ranks).
#
# Environment:
#   MASTER_PORT       rendezvous port (default: a free port picked now)
#   OMP_NUM_THREADS   torch threads per rank (default: CPU cores / NPROC, at least 1)
#   UAMIX_TRAIN_CMD   command run per rank (default: fairseq-hydra-train); split on
#                     spaces, e.g. "python -m fairseq_cli.hydra_train"
#   UAMIX_LOG_DIR     if set, rank R writes to UAMIX_LOG_DIR/rankR.log (rank 0 is also
#                     shown); otherwise all ranks print here, ranks > 0 prefixed.
#   UAMIX_WATCHDOG    default of --watchdog (default 0: off)
#
# --watchdog SECONDS: if no rank prints a line for SECONDS, stop all ranks and exit 124,
# naming the ranks that are stopped (SIGSTOP, a debugger) and when each rank last
# printed. A rank that is stopped or stuck leaves the others waiting in a collective,
# silent, forever. fairseq prints on rank 0 only (every log_interval updates, at each
# validation and checkpoint), so choose SECONDS well above the longest quiet stretch of
# a healthy run, start-up included. Off (0) by default, and with NPROC=1.
#
# Ctrl-C or SIGTERM stops every rank. If one rank fails, the others are stopped (they
# would wait for it in a collective until the timeout). The exit status is 0 only if
# every rank exits 0; otherwise the first failing rank's status (130/143 on a signal,
# 124 when the watchdog stopped the ranks).

set -u

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

WATCHDOG=${UAMIX_WATCHDOG:-0}
case "${1:-}" in
    --watchdog) [ $# -ge 2 ] || usage; WATCHDOG=$2; shift 2 ;;
    --watchdog=*) WATCHDOG=${1#--watchdog=}; shift ;;
esac
case "$WATCHDOG" in
    '' | *[!0-9]*) echo "train_cpu_multiproc.sh: --watchdog (or UAMIX_WATCHDOG) must be a whole number of seconds (0: off), got '$WATCHDOG'" >&2; exit 2 ;;
esac
WATCHDOG=$((10#$WATCHDOG))

[ $# -ge 1 ] || usage
NPROC=$1
shift
case "$NPROC" in
    '' | *[!0-9]* | 0*) echo "train_cpu_multiproc.sh: NPROC must be a positive integer, got '$NPROC'" >&2; usage ;;
esac

for arg in "$@"; do
    if [[ "$arg" =~ ^\+{0,2}distributed_training\.(distributed_rank|distributed_world_size|distributed_init_method|distributed_no_spawn|distributed_port)= ]]; then
        echo "train_cpu_multiproc.sh: '$arg' is set by this script for every rank; drop it (use NPROC, MASTER_PORT)" >&2
        exit 2
    fi
done

for arg in "$@"; do
    if [[ "$arg" =~ ^\+{0,2}distributed_training\.ddp_backend=(c10d|pytorch_ddp)$ ]]; then
        echo "train_cpu_multiproc.sh: '$arg' does not work on CPU (fairseq hands device_ids to torch's DDP, which refuses them for CPU modules); keep legacy_ddp" >&2
        exit 2
    fi
done

read -r -a TRAIN_CMD <<< "${UAMIX_TRAIN_CMD:-fairseq-hydra-train}"
if ! command -v "${TRAIN_CMD[0]}" > /dev/null; then
    echo "train_cpu_multiproc.sh: '${TRAIN_CMD[0]}' not found (install fairseq-fixed, or set UAMIX_TRAIN_CMD)" >&2
    exit 127
fi

# Defaults go after your arguments (Hydra's parser wants the overrides after options
# like --config-name), skipped for any key you set yourself.
DEFAULTS=()
for default in common.cpu=true \
               distributed_training.distributed_backend=gloo \
               distributed_training.ddp_backend=legacy_ddp \
               distributed_training.device_id=0; do
    key=${default%%=*}
    given=0
    for arg in "$@"; do
        [[ "$arg" =~ ^\+{0,2}"$key"= ]] && given=1
    done
    [ "$given" -eq 1 ] || DEFAULTS+=("$default")
done

if [ "$NPROC" -eq 1 ]; then
    [ "$WATCHDOG" -eq 0 ] || echo "train_cpu_multiproc.sh: one rank, no watchdog (nothing can wait for another rank)" >&2
    exec "${TRAIN_CMD[@]}" "$@" "${DEFAULTS[@]}"
fi

if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cores=$(getconf _NPROCESSORS_ONLN 2> /dev/null || echo 1)
    threads=$((cores / NPROC))
    [ "$threads" -ge 1 ] || threads=1
    export OMP_NUM_THREADS=$threads
fi

PORT=${MASTER_PORT:-$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}
[ -n "$PORT" ] || { echo "train_cpu_multiproc.sh: could not pick a free port; set MASTER_PORT" >&2; exit 1; }

if [ -n "${UAMIX_LOG_DIR:-}" ]; then
    mkdir -p "$UAMIX_LOG_DIR" || exit 1
fi

if [ "$WATCHDOG" -gt 0 ]; then
    # PROGRESS_DIR/rankR holds the time (epoch seconds) of rank R's last line.
    PROGRESS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/uamix-watchdog.XXXXXX") || exit 1
    trap 'rm -rf "$PROGRESS_DIR"' EXIT
    export PYTHONUNBUFFERED=1  # a rank's print()s are progress as soon as they happen
fi

echo "train_cpu_multiproc.sh: $NPROC ranks, tcp://127.0.0.1:$PORT, OMP_NUM_THREADS=$OMP_NUM_THREADS, watchdog ${WATCHDOG} s (0: off)" >&2

PIDS=()
# Traps first: a signal that arrives while the ranks start must still stop them.
alive() { kill -0 "$1" 2> /dev/null; }

any_alive() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        alive "$pid" && return 0
    done
    return 1
}

signal_ranks() {  # signal_ranks SIG: send SIG to every rank still running
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        alive "$pid" && kill -s "$1" "$pid" 2> /dev/null
    done
}

stop_ranks() {  # SIGTERM, then SIGKILL whatever is left after 10 s
    local i
    signal_ranks TERM
    signal_ranks CONT  # a stopped rank acts on SIGTERM only once continued
    for ((i = 0; i < 100; i++)); do
        any_alive || break
        sleep 0.1
    done
    signal_ranks KILL
    wait 2> /dev/null
}

on_signal() {
    trap '' INT TERM
    echo "train_cpu_multiproc.sh: got SIG$1, stopping all ranks" >&2
    stop_ranks
    [ "$1" = INT ] && exit 130
    exit 143
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

note_progress() {  # note_progress RANK PREFIX: copy lines, noting the time of the last
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s%s\n' "$2" "$line"
        printf '%(%s)T\n' -1 > "$PROGRESS_DIR/rank$1"
    done
}

to_log() {  # to_log RANK LOG: stdin to LOG (rank 0: also shown here), or here if no LOG
    if [ -z "$2" ]; then
        cat
    elif [ "$1" -eq 0 ]; then
        tee "$2"
    else
        cat > "$2"
    fi
}

start_rank() {  # start_rank RANK ARGS...: run one rank in the background, add its pid
    local rank=$1 log="" prefix=""
    shift
    if [ -n "${UAMIX_LOG_DIR:-}" ]; then
        log="$UAMIX_LOG_DIR/rank$rank.log"
    elif [ "$rank" -gt 0 ]; then
        prefix="[rank $rank] "
    fi
    if [ "$WATCHDOG" -gt 0 ]; then
        printf '%(%s)T\n' -1 > "$PROGRESS_DIR/rank$rank"  # start-up counts from now
        "${TRAIN_CMD[@]}" "$@" > >(note_progress "$rank" "$prefix" | to_log "$rank" "$log") \
            2>&1 < /dev/null &
    elif [ -n "$log" ] && [ "$rank" -eq 0 ]; then
        "${TRAIN_CMD[@]}" "$@" > >(tee "$log") 2>&1 < /dev/null &
    elif [ -n "$log" ]; then
        "${TRAIN_CMD[@]}" "$@" > "$log" 2>&1 < /dev/null &
    elif [ "$rank" -eq 0 ]; then
        "${TRAIN_CMD[@]}" "$@" < /dev/null &
    else
        "${TRAIN_CMD[@]}" "$@" > >(sed -u "s/^/$prefix/") 2>&1 < /dev/null &
    fi
    PIDS+=($!)
}

for ((rank = 0; rank < NPROC; rank++)); do
    start_rank "$rank" "$@" "${DEFAULTS[@]}" \
        "distributed_training.distributed_init_method=tcp://127.0.0.1:$PORT" \
        distributed_training.distributed_no_spawn=true \
        "distributed_training.distributed_rank=$rank" \
        "distributed_training.distributed_world_size=$NPROC"
done

process_state() {  # process_state PID: the state letter of /proc/PID/stat (T: stopped)
    local stat
    read -r stat < "/proc/$1/stat" 2> /dev/null || return 1
    stat=${stat##*) }  # the command name in parentheses may contain spaces
    echo "${stat%% *}"
}

check_watchdog() {  # stop all ranks and exit 124 if no rank printed for WATCHDOG s
    local now rank last newest=0 ages="" stopped="" state
    printf -v now '%(%s)T' -1
    for rank in "${!PIDS[@]}"; do
        last=""
        read -r last < "$PROGRESS_DIR/rank$rank" 2> /dev/null
        [ -n "$last" ] || last=$now  # being rewritten at this instant
        [ "$last" -gt "$newest" ] && newest=$last
        ages+="${ages:+, }rank $rank $((now - last)) s ago"
    done
    [ $((now - newest)) -ge "$WATCHDOG" ] || return 0
    for rank in "${!PIDS[@]}"; do
        state=$(process_state "${PIDS[$rank]}") || state=""
        [[ "$state" == [Tt] ]] && stopped+="${stopped:+, }rank $rank (pid ${PIDS[$rank]})"
    done
    trap '' INT TERM
    echo "train_cpu_multiproc.sh: watchdog: no rank printed a line for $((now - newest)) s (--watchdog $WATCHDOG); last output: $ages" >&2
    if [ -n "$stopped" ]; then
        echo "train_cpu_multiproc.sh: watchdog: stopped (SIGSTOP or a debugger): $stopped; the other ranks were waiting for it" >&2
    else
        echo "train_cpu_multiproc.sh: watchdog: no rank is stopped; one is stuck (a collective, I/O, a deadlock) or the run is quieter than --watchdog: raise it if so" >&2
    fi
    echo "train_cpu_multiproc.sh: watchdog: stopping all ranks" >&2
    stop_ranks
    exit 124
}

# Poll instead of `wait -n` (bash >= 4.3 only); traps run between the short sleeps.
STATUS=0
RUNNING=("${!PIDS[@]}")
while [ ${#RUNNING[@]} -gt 0 ]; do
    still=()
    for rank in "${RUNNING[@]}"; do
        pid=${PIDS[$rank]}
        if alive "$pid"; then
            still+=("$rank")
            continue
        fi
        wait "$pid"
        rc=$?
        if [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ]; then
            STATUS=$rc
            echo "train_cpu_multiproc.sh: rank $rank exited with status $rc, stopping the other ranks" >&2
            stop_ranks
            still=()
            break
        fi
    done
    RUNNING=("${still[@]+"${still[@]}"}")
    [ ${#RUNNING[@]} -gt 0 ] || break
    [ "$WATCHDOG" -gt 0 ] && check_watchdog
    sleep 0.2
done
wait 2> /dev/null  # output filters
exit "$STATUS"
