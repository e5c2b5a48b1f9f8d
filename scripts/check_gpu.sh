#!/usr/bin/env bash
# Five-minute self-check of a GPU machine, to run before a long training:
#   bash scripts/check_gpu.sh [DEVICE_ID]
# prints MindSpore / GPU / driver / CUDA / cuDNN versions (warning when they do not fit MindSpore
# 2.10's GPU build), then on generated toy data: MindRecord conversion, 20 training steps in float32
# and 20 in mixed precision (O1 float16), evaluation, MINDIR export and a run of the exported graph;
# one PASS/FAIL line per stage. Logs and report.txt go to OUT_DIR (default ./gpu_check).
# DEVICE_TARGET=CPU runs the same stages on the CPU (no GPU needed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="usage: bash $0 [DEVICE_ID]   (environment: OUT_DIR=gpu_check, DEVICE_TARGET=GPU|CPU)"
split_args "$USAGE" 0 1 "$@"
[ ${#EXTRA[@]} -eq 0 ] || { echo "$USAGE" >&2; exit 1; }
DEVICE_ID="${POSITIONAL[0]:-0}"
case "$DEVICE_ID" in ''|*[!0-9]*) echo "$USAGE" >&2; exit 1 ;; esac
DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
case "$DEVICE_TARGET" in GPU|CPU) ;; *) echo "error: DEVICE_TARGET must be GPU or CPU, got '$DEVICE_TARGET'" >&2; exit 1 ;; esac
OUT_DIR="$(abs_path "${OUT_DIR:-gpu_check}")"
[ "$DEVICE_TARGET" = "GPU" ] && export CUDA_VISIBLE_DEVICES="$DEVICE_ID"
export RANK_ID=0 RANK_SIZE=1
exec "$PYTHON" -u "$REPO_DIR/tools/gpu_self_check.py" --out "$OUT_DIR" --device_target "$DEVICE_TARGET"
