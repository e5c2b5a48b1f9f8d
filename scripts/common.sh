#!/usr/bin/env bash
# Helpers shared by the run_*.sh scripts (sourced, not run).

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# A venv next to the code is used when nothing else was chosen.
if [ "$PYTHON" = "python3" ] && [ -x "$REPO_DIR/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    PYTHON="$REPO_DIR/.venv/bin/python"
fi

# abs_path PATH: absolute form of a (possibly relative) path; the path need not exist.
abs_path() {
    case "$1" in
        /*) echo "$1" ;;
        *) echo "$(pwd)/$1" ;;
    esac
}

# require_dir NAME PATH: stop with a one-line message when PATH is not a directory.
require_dir() {
    if [ ! -d "$2" ]; then
        echo "error: $1 is not a directory: $2" >&2
        exit 1
    fi
}

# require_file NAME PATH: stop with a one-line message when PATH is not a file.
require_file() {
    if [ ! -f "$2" ]; then
        echo "error: $1 is not a file: $2" >&2
        exit 1
    fi
}

# split_args USAGE MIN MAX ARGS...: --key=value arguments into EXTRA, the others into POSITIONAL;
# prints USAGE and exits unless there are MIN..MAX positional arguments.
split_args() {
    local usage="$1" min="$2" max="$3"; shift 3
    POSITIONAL=(); EXTRA=()
    for a in "$@"; do case "$a" in --*) EXTRA+=("$a") ;; *) POSITIONAL+=("$a") ;; esac; done
    if [ ${#POSITIONAL[@]} -lt "$min" ] || [ ${#POSITIONAL[@]} -gt "$max" ]; then echo "$usage" >&2; exit 1; fi
}

# optional_file NAME VALUE: absolute path of an optional file argument ("" stays "").
optional_file() {
    [ -z "$2" ] && return 0
    local path; path="$(abs_path "$2")"
    require_file "$1" "$path"
    echo "$path"
}

# not_mask_arg VALUE: the train/eval option for the original's NOT_MASK argument: nothing for False
# (the only version there is), --not_mask=True for True (which train.py and eval.py refuse, saying why).
not_mask_arg() {
    case "$1" in
        ""|False|false|0) echo "" ;;
        True|true|1) echo "--not_mask=True" ;;
        *) echo "error: NOT_MASK must be True or False, got '$1'" >&2; exit 1 ;;
    esac
}

# run_logged LOGFILE CMD...: run in the foreground (FOREGROUND=1) or in the background like the
# model-zoo scripts, with stdout and stderr in LOGFILE.
run_logged() {
    local log="$1"; shift
    if [ "${FOREGROUND:-0}" = "1" ]; then
        "$@" 2>&1 | tee "$log"
        return "${PIPESTATUS[0]}"
    fi
    nohup "$@" > "$log" 2>&1 &
    echo "started (pid $!); log: $log"
}

# positive_int VALUE USAGE: stop with USAGE unless VALUE is a positive integer.
positive_int() {
    case "$1" in
        ''|*[!0-9]*|0) echo "$2" >&2; exit 1 ;;
    esac
}

# msrun_command LOG_DIR: fills LAUNCH with the msrun prefix (MindSpore's own launcher, no MPI) for
# WORKER_NUM processes in all, LOCAL_WORKER_NUM on this node (both default to DEVICE_NUM),
# MASTER_ADDR / MASTER_PORT / NODE_RANK for several nodes. The caller checked the numbers.
msrun_command() {
    # msrun starts a bare "python": the chosen interpreter's directory goes first on PATH.
    local py_dir; py_dir="$(dirname "$(command -v "$PYTHON")")"
    export PATH="$py_dir:$PATH"
    LAUNCH=(msrun --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER_NUM"
            --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-8118}" --node_rank="${NODE_RANK:-0}"
            --join=True --log_dir="$1/msrun")
}

# enter_log_dir DIR: create DIR and work there (nothing with DRY_RUN=1, which writes nothing).
enter_log_dir() {
    [ "${DRY_RUN:-0}" = "1" ] && return 0
    mkdir -p "$1"
    cd "$1"
}

# launch LOGFILE CMD...: run_logged, or with DRY_RUN=1 only print the command (one line) and stop.
launch() {
    if [ "${DRY_RUN:-0}" = "1" ]; then
        shift
        echo "$*"
        return 0
    fi
    run_logged "$@"
}

