#!/usr/bin/env bash
# The whole GPU session of this project in one command (one machine start): an environment
# check that stops at once if keras cannot train here, the throughput check (gpu_check.sh),
# one real model.py run at 320 px with --mixed-precision, and the real-slice recipes
# (gpu_real_slice.sh) in what is left of ${DEADLINE:-530} seconds.
#
#   COCO_SAMPLE=path/to/coco-sample bash benchmarks/gpu_session.sh           # on the GPU machine
#   COCO_SAMPLE=../shared/data/coco-sample PYTHON=.venv/bin/python SMALL=1 bash benchmarks/gpu_session.sh
#
# SMALL=1 is the CPU dry run (a few images, steps and folds). Logs go to ${OUT:-/tmp/gpu_session}.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-/tmp/gpu_session} KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
DEADLINE=${DEADLINE:-530}
mkdir -p "$OUT"
source benchmarks/carried_wheels.sh || exit 2
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    $PY - <<'PY' || exit 3
import cv2, jax, keras, numpy as np, pycocotools
m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
m.compile("adam", "mse")
m.fit(np.zeros((8, 4)), np.zeros((8, 2)), verbose=0)
print("keras", keras.__version__, keras.backend.backend(), "jax", jax.__version__, jax.devices(),
      "numpy", np.__version__, "opencv", cv2.__version__, "- a keras fit step ran")
PY
} 2>&1 | tee "$OUT/env.log"
[ "${PIPESTATUS[0]}" = 0 ] || exit 3
if [ -n "${SMALL:-}" ]; then
    check=(IMAGES=30 STEPS=2 BATCHES=8); run=(--size 64 --batch-size 8 --steps-per-epoch 2)
    slice=(FOLDS=2 "RECIPES=tiny:--size 64 --epochs 2 --min-steps 10")
else
    check=(IMAGES=600 STEPS=20 "BATCHES=64 256"); run=(--size 320 --width 1 --batch-size 256 --steps-per-epoch 20)
    slice=("RECIPES=size256:--size 256;size256_w1_b32:--size 256 --width 1 --batch-size 32")
fi
env "${check[@]}" WORK=/tmp/gpu_check timeout 200 bash benchmarks/gpu_check.sh
echo "== model.py on the same figures, 3 epochs (the first compiles)" | tee "$OUT/model.log"
timeout 90 $PY model.py --data /tmp/gpu_check/coco.npy --out /tmp/gpu_model_run "${run[@]}" --epochs 3 \
    --mixed-precision --overwrite --quiet 2>&1 | tee -a "$OUT/model.log"
env "${slice[@]}" BUDGET=$((DEADLINE - SECONDS)) COCO_SAMPLE="${COCO_SAMPLE:?set COCO_SAMPLE}" \
    bash benchmarks/gpu_real_slice.sh
echo "session done in $SECONDS s"
