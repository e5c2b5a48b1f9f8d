#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs (default 8) with mpirun + NCCL:
#   bash scripts/run_distribute_train_gpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]
# Several machines: HOSTFILE=hosts DEVICE_NUM=16 bash scripts/run_distribute_train_gpu.sh ...
# (an OpenMPI hostfile, "node1 slots=8" per line; the code and data at the same paths on every node).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: [DEVICE_NUM=8] [HOSTFILE=file] bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]" 2 4 "$@"
DATA_PATH="$(abs_path "${POSITIONAL[0]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[1]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[2]:-}")"
NOT_MASK="$(not_mask_arg "${POSITIONAL[3]:-}")"
require_dir DATA_PATH "$DATA_PATH"
DEVICE_NUM="${DEVICE_NUM:-8}"
HOSTFILE_ARGS=()
if [ -n "${HOSTFILE:-}" ]; then
    HOSTFILE="$(abs_path "$HOSTFILE")"
    require_file HOSTFILE "$HOSTFILE"
    HOSTFILE_ARGS=(--hostfile "$HOSTFILE")
fi

LOG_DIR="$(pwd)/log_dist"
mkdir -p "$LOG_DIR"
export RANK_SIZE="$DEVICE_NUM"
cd "$LOG_DIR"
run_logged "$LOG_DIR/train_dist.log" mpirun --allow-run-as-root -n "$DEVICE_NUM" "${HOSTFILE_ARGS[@]}" \
    --output-filename log_output --merge-stderr-to-stdout \
    "$PYTHON" -u "$REPO_DIR/train.py" --device_target=GPU --run_distribute=True \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" ${NOT_MASK:+"$NOT_MASK"} "${EXTRA[@]}"
