#!/usr/bin/env bash
# Evaluate on the CPU: bash scripts/run_eval_cpu.sh DATA_PATH MINDRECORD_PATH CHECKPOINT_PATH [--key=value ...]
# Same outputs as run_eval.sh, in eval_log/ (EVAL_DIR=... to change).
set -euo pipefail
DEVICE_TARGET=CPU exec bash "$(dirname "${BASH_SOURCE[0]}")/run_eval.sh" 0 "$@"
