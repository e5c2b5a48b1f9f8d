#!/usr/bin/env bash
# Evaluate on one GPU: bash scripts/run_eval.sh DEVICE_ID DATA_PATH MINDRECORD_PATH CHECKPOINT_PATH [NOT_MASK] [--key=value ...]
# Writes eval_log/eval.log (COCO bbox/segm tables), the result jsons and the per-category AP CSV.
# EVAL_WORKERS (default 4) processes paste and encode masks while the GPU runs the next images.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: bash $0 DEVICE_ID DATA_PATH MINDRECORD_PATH CHECKPOINT_PATH [NOT_MASK] [--key=value ...]" 4 5 "$@"
DEVICE_ID="${POSITIONAL[0]}"
DATA_PATH="$(abs_path "${POSITIONAL[1]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[2]}")"
CHECKPOINT_PATH="$(abs_path "${POSITIONAL[3]}")"
NOT_MASK="$(not_mask_arg "${POSITIONAL[4]:-}")"
require_dir DATA_PATH "$DATA_PATH"
require_file CHECKPOINT_PATH "$CHECKPOINT_PATH"

EVAL_DIR="$(abs_path "${EVAL_DIR:-eval_log}")"
mkdir -p "$EVAL_DIR"
export CUDA_VISIBLE_DEVICES="$DEVICE_ID"
cd "$EVAL_DIR"
run_logged "$EVAL_DIR/eval.log" "$PYTHON" -u "$REPO_DIR/eval.py" --device_target="${DEVICE_TARGET:-GPU}" --device_id=0 \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --checkpoint_path="$CHECKPOINT_PATH" \
    --eval_output_dir="$EVAL_DIR" --eval_workers="${EVAL_WORKERS:-4}" ${NOT_MASK:+"$NOT_MASK"} "${EXTRA[@]}"
