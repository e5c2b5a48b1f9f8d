#!/usr/bin/env bash
# Train on one GPU: bash scripts/run_standalone_train_gpu.sh DEVICE_ID DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage="usage: bash $0 DEVICE_ID DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]"
positional=(); extra=()
for a in "$@"; do case "$a" in --*) extra+=("$a") ;; *) positional+=("$a") ;; esac; done
if [ ${#positional[@]} -lt 3 ] || [ ${#positional[@]} -gt 5 ]; then echo "$usage" >&2; exit 1; fi
DEVICE_ID="${positional[0]}"
DATA_PATH="$(abs_path "${positional[1]}")"
MINDRECORD_PATH="$(abs_path "${positional[2]}")"
PRETRAINED_PATH="${positional[3]:-}"
[ -n "$PRETRAINED_PATH" ] && PRETRAINED_PATH="$(abs_path "$PRETRAINED_PATH")" && require_file PRETRAINED_PATH "$PRETRAINED_PATH"
NOT_MASK="$(not_mask_arg "${positional[4]:-}")"
require_dir DATA_PATH "$DATA_PATH"

LOG_DIR="$(pwd)/log"
mkdir -p "$LOG_DIR"
export CUDA_VISIBLE_DEVICES="$DEVICE_ID"
export RANK_ID=0 RANK_SIZE=1
cd "$LOG_DIR"
run_logged "$LOG_DIR/train.log" "$PYTHON" -u "$REPO_DIR/train.py" --device_target=GPU --device_id=0 \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" "$NOT_MASK" "${extra[@]}"
