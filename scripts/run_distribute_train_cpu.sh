#!/usr/bin/env bash
# Data-parallel training on the CPU with msrun (DEVICE_NUM processes, default 2):
#   bash scripts/run_distribute_train_cpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]
# Several machines: WORKER_NUM=total LOCAL_WORKER_NUM=per-node MASTER_ADDR=node0 NODE_RANK=i on each node.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: [DEVICE_NUM=2] bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [--key=value ...]" 2 3 "$@"
DATA_PATH="$(abs_path "${POSITIONAL[0]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[1]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[2]:-}")"
require_dir DATA_PATH "$DATA_PATH"
DEVICE_NUM="${DEVICE_NUM:-2}"
WORKER_NUM="${WORKER_NUM:-$DEVICE_NUM}"
LOCAL_WORKER_NUM="${LOCAL_WORKER_NUM:-$DEVICE_NUM}"

# msrun starts a bare "python": the chosen interpreter's directory goes first on PATH.
PY_DIR="$(dirname "$(command -v "$PYTHON")")"
export PATH="$PY_DIR:$PATH"
LOG_DIR="$(abs_path "${LOG_DIR:-log_dist}")"
mkdir -p "$LOG_DIR"
cd "$LOG_DIR"
run_logged "$LOG_DIR/train_dist.log" msrun --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER_NUM" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-8118}" --node_rank="${NODE_RANK:-0}" \
    --join=True --log_dir="$LOG_DIR/msrun" \
    "$REPO_DIR/train.py" --device_target=CPU --run_distribute=True \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" "${EXTRA[@]}"
