#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM GPUs (default 8), NCCL between them:
#   bash scripts/run_distribute_train_gpu.sh DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]
# Launcher: LAUNCHER=mpirun (default, as the model zoo) or LAUNCHER=msrun (MindSpore's own, no MPI needed).
#   mpirun, several machines: HOSTFILE=hosts DEVICE_NUM=16 (an OpenMPI hostfile, "node1 slots=8" per line).
#   msrun, several machines: WORKER_NUM=total LOCAL_WORKER_NUM=per-node MASTER_ADDR=node0 [MASTER_PORT=8118]
#     NODE_RANK=i, run on every node.
# The code and data must be at the same paths on every node. DRY_RUN=1 prints the launch command instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="usage: [DEVICE_NUM=8] [LAUNCHER=mpirun [HOSTFILE=file] | LAUNCHER=msrun [WORKER_NUM=n LOCAL_WORKER_NUM=n MASTER_ADDR=host MASTER_PORT=port NODE_RANK=i]] bash $0 DATA_PATH MINDRECORD_PATH [PRETRAINED_PATH] [NOT_MASK] [--key=value ...]"
split_args "$USAGE" 2 4 "$@"
DATA_PATH="$(abs_path "${POSITIONAL[0]}")"
MINDRECORD_PATH="$(abs_path "${POSITIONAL[1]}")"
PRETRAINED_PATH="$(optional_file PRETRAINED_PATH "${POSITIONAL[2]:-}")"
NOT_MASK="$(not_mask_arg "${POSITIONAL[3]:-}")"
require_dir DATA_PATH "$DATA_PATH"
DEVICE_NUM="${DEVICE_NUM:-8}"
positive_int "$DEVICE_NUM" "$USAGE"
LOG_DIR="$(pwd)/log_dist"

case "${LAUNCHER:-mpirun}" in
    mpirun)
        # the msrun settings mean nothing to mpirun: a mix is a mistake, not a wish
        for v in WORKER_NUM LOCAL_WORKER_NUM MASTER_ADDR MASTER_PORT NODE_RANK; do
            [ -z "${!v:-}" ] || { echo "$USAGE" >&2; exit 1; }
        done
        HOSTFILE_ARGS=()
        if [ -n "${HOSTFILE:-}" ]; then
            HOSTFILE="$(abs_path "$HOSTFILE")"
            require_file HOSTFILE "$HOSTFILE"
            HOSTFILE_ARGS=(--hostfile "$HOSTFILE")
        fi
        export RANK_SIZE="$DEVICE_NUM"
        LAUNCH=(mpirun --allow-run-as-root -n "$DEVICE_NUM" "${HOSTFILE_ARGS[@]}" --output-filename log_output
                --merge-stderr-to-stdout "$PYTHON" -u)
        ;;
    msrun)
        [ -z "${HOSTFILE:-}" ] || { echo "$USAGE" >&2; exit 1; }
        WORKER_NUM="${WORKER_NUM:-$DEVICE_NUM}"
        LOCAL_WORKER_NUM="${LOCAL_WORKER_NUM:-$DEVICE_NUM}"
        for n in "$WORKER_NUM" "$LOCAL_WORKER_NUM"; do positive_int "$n" "$USAGE"; done
        [ "$LOCAL_WORKER_NUM" -le "$WORKER_NUM" ] || { echo "$USAGE" >&2; exit 1; }
        msrun_command "$LOG_DIR"
        ;;
    *)
        echo "$USAGE" >&2; exit 1 ;;
esac

enter_log_dir "$LOG_DIR"
launch "$LOG_DIR/train_dist.log" "${LAUNCH[@]}" "$REPO_DIR/train.py" --device_target=GPU --run_distribute=True \
    --coco_root="$DATA_PATH" --mindrecord_dir="$MINDRECORD_PATH" --pre_trained="$PRETRAINED_PATH" \
    --save_checkpoint_path="$LOG_DIR" ${NOT_MASK:+"$NOT_MASK"} "${EXTRA[@]}"
