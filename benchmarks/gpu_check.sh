#!/usr/bin/env bash
# One prepared GPU measurement (at most ~8 minutes): training figures/s at 320 with
# --mixed-precision on the JAX backend, batch 64 and 256, the new input path (host reads
# uint8 crops, the device augments) and the old one (host warps and renders maps) in the
# same run, and the fraction of step time spent waiting for input.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repository root
#   IMAGES=40 STEPS=3 BATCHES="8" bash benchmarks/gpu_check.sh   # a quick dry run on a CPU
#
# Needs keras, namex, optree and pycocotools beside jax[cuda]: if a .whl/ folder is here,
# its wheels are installed into /tmp/site first (benchmarks/carried_wheels.sh).
# Writes its data under ${WORK:-/tmp/gpu_check} and the log to ${OUT:-$WORK}/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu_check}
LOG=${OUT:-$WORK}/gpu_check.log
IMAGES=${IMAGES:-1500}        # synthetic images -> about 2,600 figures
STEPS=${STEPS:-30}            # timed steps per configuration
BATCHES=${BATCHES:-"64 256"}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$(dirname "$LOG")"
source benchmarks/carried_wheels.sh
{
    echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
    $PY -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
    started=$SECONDS
    if [ ! -f "$WORK/coco.npy" ]; then
        $PY synthetic_coco.py --out "$WORK/coco" --split train2017 --images "$IMAGES" --seed 1 >/dev/null
        $PY coco_process.py --coco-root "$WORK/coco" --split train2017 --out "$WORK/coco.npy" \
            --allow-multi-polygon --examples 0 --quiet --workers "$(nproc)"
    fi
    echo "data ready in $((SECONDS - started)) s"
    $PY benchmarks/bench_input.py --data "$WORK/coco.npy" --size 320 --workers 1 2 4
    $PY benchmarks/bench_train.py --data "$WORK/coco.npy" --size 320 --simple-batches $BATCHES \
        --original-batches --input new old --mixed-precision --steps "$STEPS" --warmup 3 --workers 4
    echo "done in $((SECONDS - started)) s"
} 2>&1 | tee "$LOG"
