#!/usr/bin/env bash
# The main job on the embedded default, no download: generate a synthetic COCO-format
# sample, cut it into figures, train a small model on the CPU, evaluate it, and print
# the metrics and the pictures written. About 4 minutes on 2 idle cores (see docs/results.md).
# Settings can be overridden from the environment, e.g. EPOCHS=20 bash run_sample.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-sample}            # synthetic COCO folder and the .npy files
RUN=${RUN:-runs/sample}         # training run folder
TRAIN_IMAGES=${TRAIN_IMAGES:-500}
VAL_IMAGES=${VAL_IMAGES:-100}
EPOCHS=${EPOCHS:-12}
SIZE=${SIZE:-128}               # network input side; figures are stored at 320 as in COCO runs
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

step "1/5 synthetic COCO sample -> $DATA/coco"
$PY synthetic_coco.py --out "$DATA/coco" --split train2017 --images "$TRAIN_IMAGES" --seed 1
$PY synthetic_coco.py --out "$DATA/coco" --split val2017 --images "$VAL_IMAGES" --seed 2

step "2/5 figures and confidence maps -> $DATA/coco.npy, $DATA/coco_val.npy"
$PY coco_process.py --coco-root "$DATA/coco" --split train2017 --out "$DATA/coco.npy" \
    --allow-multi-polygon --examples 4 --examples-dir "$DATA/imgs" --quiet
$PY coco_process.py --coco-root "$DATA/coco" --split val2017 --out "$DATA/coco_val.npy" \
    --allow-multi-polygon --examples 0 --quiet

step "3/5 training -> $RUN"
rm -rf "$RUN"
$PY model.py --data "$DATA/coco.npy" --val-data "$DATA/coco_val.npy" --out "$RUN" \
    --size "$SIZE" --width 0.5 --epochs "$EPOCHS" --lr 5e-4 --lr-schedule cosine --min-steps 0 --quiet

step "4/5 evaluation -> $RUN/eval"
$PY evaluate.py --model "$RUN/best.keras" --data "$DATA/coco_val.npy" --coco-root "$DATA/coco" \
    --split val2017 --train-data "$DATA/coco.npy" --out "$RUN/eval" --quiet

step "5/5 pictures"
last=$(ls "$RUN"/eval/*_img_GT.png | tail -n 1)
echo "figures and their maps (coco_process.py): $(ls "$DATA"/imgs/*.png | tr '\n' ' ')"
echo "input | target | prediction (evaluate.py): $RUN/eval/examples.png $RUN/eval/worst.png"
echo "per-joint PCK:                             $RUN/eval/pck_per_joint.png"
echo "last epoch's validation batch (model.py):  $last ${last%_img_GT.png}_heatmap_GT.png ${last%_img_GT.png}_heatmap.png ${last%_img_GT.png}_overlap.png"
echo "training curves:                           $RUN/curves.png"
echo "metrics:                                   $RUN/eval/metrics.json"
echo
$PY -c "import json, sys, evaluate; evaluate.print_table(json.load(open(sys.argv[1])))" "$RUN/eval/metrics.json"
echo "done in $((SECONDS - started)) s"
