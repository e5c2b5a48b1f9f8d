#!/usr/bin/env bash
# Train on the CPU: bash scripts/run_standalone_train_cpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]"
positional=(); extra=()
for a in "$@"; do case "$a" in --*) extra+=("$a") ;; *) positional+=("$a") ;; esac; done
if [ ${#positional[@]} -lt 2 ] || [ ${#positional[@]} -gt 3 ]; then echo "$usage" >&2; exit 1; fi
DATA_PATH="$(abs_path "${positional[0]}")"
MINDRECORD_PATH="$(abs_path "${positional[1]}")"
PRETRAINED_PATH="${positional[2]:-}"
[ -n "$PRETRAINED_PATH" ] && PRETRAINED_PATH="$(abs_path "$PRETRAINED_PATH")" && require_file PRETRAINED_PATH "$PRETRAINED_PATH"
require_dir DATA_PATH "$DATA_PATH"

LOG_DIR="$(abs_path "${LOG_DIR:-log}")"
mkdir -p "$LOG_DIR"
cd "$LOG_DIR"
run_logged "$LOG_DIR/train.log" "$PYTHON" -u "$REPO_DIR/train.py" --device_target=CPU \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" "${extra[@]}"
