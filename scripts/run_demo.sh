#!/usr/bin/env bash
# The whole system on the bundled toy data, on the CPU by default:
#   bash scripts/run_demo.sh [OUT_DIR] [--key=value ...]
# generates toy COCO data, converts it to MindRecord, trains PointRend from scratch
# (configs/demo_cpu.yaml), evaluates it (COCO bbox/segm AP, per-category AP, Boundary AP) and writes
# pictures of predictions next to the ground truth. Environment knobs:
#   DEVICE_TARGET=GPU  TRAIN_IMAGES=600  VAL_IMAGES=24  SEED=1  DEMO_CONFIG=configs/demo_cpu.yaml
# Extra --key=value arguments go to training and evaluation (e.g. --epoch_size=1 --total_epoch=1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
split_args "usage: bash $0 [OUT_DIR] [--key=value ...]" 0 1 "$@"
OUT_DIR="$(abs_path "${POSITIONAL[0]:-demo_out}")"
DEVICE_TARGET="${DEVICE_TARGET:-CPU}"
CONFIG="$(abs_path "${DEMO_CONFIG:-$REPO_DIR/configs/demo_cpu.yaml}")"
require_file DEMO_CONFIG "$CONFIG"
DATA="$OUT_DIR/data"
MINDRECORD="$OUT_DIR/mindrecord"
TRAIN_DIR="$OUT_DIR/train"
EVAL_DIR="$OUT_DIR/eval_log"
mkdir -p "$OUT_DIR" "$TRAIN_DIR" "$EVAL_DIR"
common=(--config_path="$CONFIG" --device_target="$DEVICE_TARGET" --coco_root="$DATA" --mindrecord_dir="$MINDRECORD")
start=$(date +%s)
stage_start=$start
TIMES=()
# stage_done NAME: remember how long the stage that just ended took
stage_done() {
    local now; now=$(date +%s)
    TIMES+=("$1 $(( now - stage_start )) s")
    stage_start=$now
}

echo "== 1/4 toy data -> $DATA"
if [ ! -f "$DATA/annotations/instances_val2017.json" ]; then
    "$PYTHON" -m src.demo.toy_data --out "$DATA" --train "${TRAIN_IMAGES:-600}" --val "${VAL_IMAGES:-24}" --seed "${SEED:-1}"
fi
stage_done "toy data"

echo "== 2/4 MindRecord conversion and training -> $TRAIN_DIR"
(cd "$REPO_DIR" && "$PYTHON" -u train.py "${common[@]}" --save_checkpoint_path="$TRAIN_DIR" "${EXTRA[@]}") \
    2>&1 | tee "$TRAIN_DIR/train.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "error: training failed (see $TRAIN_DIR/train.log)" >&2; exit 1; }
CKPT="$(ls -t "$TRAIN_DIR"/ckpt_0/*.ckpt 2>/dev/null | head -n 1)"
[ -n "$CKPT" ] || { echo "error: training wrote no checkpoint in $TRAIN_DIR/ckpt_0" >&2; exit 1; }
stage_done "conversion + training"

echo "== 3/4 evaluation of $CKPT -> $EVAL_DIR"
(cd "$REPO_DIR" && "$PYTHON" -u eval.py "${common[@]}" --checkpoint_path="$CKPT" --eval_output_dir="$EVAL_DIR" \
    "${EXTRA[@]}") 2>&1 | tee "$EVAL_DIR/eval.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "error: evaluation failed (see $EVAL_DIR/eval.log)" >&2; exit 1; }
stage_done "evaluation"

echo "== 4/4 prediction vs ground truth pictures -> $OUT_DIR/overlays"
(cd "$REPO_DIR" && "$PYTHON" -m src.demo.demo_report --ann_file="$DATA/annotations/instances_val2017.json" \
    --image_dir="$DATA/val2017" --segm_json="$EVAL_DIR/results.pkl.segm.json" --out_dir="$OUT_DIR/overlays")
stage_done "overlays"

echo
total=$(( $(date +%s) - start ))
echo "demo finished in $(( total / 60 )) min $(( total % 60 )) s ($(IFS=,; echo "${TIMES[*]}" | sed 's/,/, /g'))"
grep -E "^bbox AP|^Boundary AP" "$EVAL_DIR/eval.log" || true
echo "  toy data:            $DATA"
echo "  MindRecord:          $MINDRECORD"
echo "  checkpoint:          $CKPT"
echo "  loss curve:          $TRAIN_DIR/loss_curve.png"
echo "  eval log:            $EVAL_DIR/eval.log"
echo "  per-category AP:     $EVAL_DIR/coco_per_category_ap.csv"
echo "  overlays:            $OUT_DIR/overlays/ (overview.png: the first two)"
