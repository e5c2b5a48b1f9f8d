#!/usr/bin/env bash
# Train on the CPU: bash scripts/run_standalone_train_cpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]" 2 3 "$@"
DATA_PATH="$(abs_path "${POSITIONAL[0]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[1]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[2]:-}")"
require_dir DATA_PATH "$DATA_PATH"

LOG_DIR="$(abs_path "${LOG_DIR:-log}")"
mkdir -p "$LOG_DIR"
cd "$LOG_DIR"
run_logged "$LOG_DIR/train.log" "$PYTHON" -u "$REPO_DIR/train.py" --device_target=CPU \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" "${EXTRA[@]}"
