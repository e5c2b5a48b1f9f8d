#!/usr/bin/env bash
# Train on one GPU: bash scripts/run_standalone_train_gpu.sh DEVICE_ID DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: bash $0 DEVICE_ID DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]" 3 5 "$@"
DEVICE_ID="${POSITIONAL[0]}"
DATA_PATH="$(abs_path "${POSITIONAL[1]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[2]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[3]:-}")"
NOT_MASK="$(not_mask_arg "${POSITIONAL[4]:-}")"
require_dir DATA_PATH "$DATA_PATH"

LOG_DIR="$(pwd)/log"
mkdir -p "$LOG_DIR"
export CUDA_VISIBLE_DEVICES="$DEVICE_ID"
export RANK_ID=0 RANK_SIZE=1
cd "$LOG_DIR"
run_logged "$LOG_DIR/train.log" "$PYTHON" -u "$REPO_DIR/train.py" --device_target=GPU --device_id=0 \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" ${NOT_MASK:+"$NOT_MASK"} "${EXTRA[@]}"
