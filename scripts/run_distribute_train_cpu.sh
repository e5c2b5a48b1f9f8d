#!/usr/bin/env bash
# Data-parallel training on the CPU with msrun (DEVICE_NUM processes, default 2):
#   bash scripts/run_distribute_train_cpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]
# Several machines: WORKER_NUM=total LOCAL_WORKER_NUM=per-node MASTER_ADDR=node0 NODE_RANK=i on each node.
# DRY_RUN=1 prints the launch command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="usage: [DEVICE_NUM=2] [WORKER_NUM=n LOCAL_WORKER_NUM=n MASTER_ADDR=host NODE_RANK=i] bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]"
split_args "$USAGE" 2 3 "$@"
DATA_PATH="$(abs_path "${POSITIONAL[0]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[1]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[2]:-}")"
require_dir DATA_PATH "$DATA_PATH"
DEVICE_NUM="${DEVICE_NUM:-2}"
WORKER_NUM="${WORKER_NUM:-$DEVICE_NUM}"
LOCAL_WORKER_NUM="${LOCAL_WORKER_NUM:-$DEVICE_NUM}"
for n in "$DEVICE_NUM" "$WORKER_NUM" "$LOCAL_WORKER_NUM"; do positive_int "$n" "$USAGE"; done
[ "$LOCAL_WORKER_NUM" -le "$WORKER_NUM" ] || { echo "$USAGE" >&2; exit 1; }

LOG_DIR="$(abs_path "${LOG_DIR:-log_dist}")"
enter_log_dir "$LOG_DIR"
msrun_command "$LOG_DIR"
launch "$LOG_DIR/train_dist.log" "${LAUNCH[@]}" \
    "$REPO_DIR/train.py" --device_target=CPU --run_distribute=True \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" "${EXTRA[@]}"
