#!/usr/bin/env bash
# The real-slice cross-validation (bench_real_slice.py, issue 14) of several recipes at once on
# one GPU: every fold of every recipe is its own model.py process, all side by side, so recipes
# that take an hour on 2 CPU cores (256 px, width 1) fit in a few minutes of a GPU box.
#
#   COCO_SAMPLE=path/to/coco-sample bash benchmarks/gpu_real_slice.sh     # on the GPU machine
#   COCO_SAMPLE=../shared/data/coco-sample PYTHON=.venv/bin/python FOLDS=2 \
#       RECIPES="tiny:--size 64 --epochs 2 --min-steps 10" bash benchmarks/gpu_real_slice.sh  # CPU dry run
#
# RECIPES: ';'-separated "name:model.py flags" (an empty flag list is model.py's defaults).
# JOBS: folds of a recipe trained at once (default all). With fewer, the later folds start from
# the compiled programs the first ones left in JAX's persistent cache ($WORK/jax_cache): on the
# H100 10 processes compiling at once did not finish one epoch in 227 s (docs/results.md, GPU training).
# Do not shorten the compile with XLA_FLAGS=--xla_gpu_autotune_level=0: on the H200 it cut the
# warm-up from 82.5 to 27.9 s but made every training step 86x slower (docs/results.md, GPU training).
# BUDGET: seconds after which unfinished recipes are stopped (their finished folds' metrics stay
# in $WORK/NAME/foldK/eval/metrics.json). Needs what gpu_check.sh needs (.whl/ is installed the
# same way). Writes ${OUT:-$WORK}/real_slice.log and real_slice.tgz (results, logs, log.csv).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu_real_slice}
LOG_DIR=${OUT:-$WORK}
COCO_SAMPLE=${COCO_SAMPLE:?set COCO_SAMPLE to a COCO folder (annotations/, train2017/)}
FOLDS=${FOLDS:-5}
JOBS=${JOBS:-$FOLDS}
BUDGET=${BUDGET:-300}
RECIPES=${RECIPES:-"defaults:;size256:--size 256;size256_w1_b32:--size 256 --width 1 --batch-size 32"}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false \
    JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jax_cache} \
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
mkdir -p "$WORK" "$LOG_DIR"
source benchmarks/carried_wheels.sh || exit 2
{
    echo "== real slice $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo 'no GPU'), $(nproc) cores"
    started=$SECONDS
    $PY coco_process.py --coco-root "$COCO_SAMPLE" --out "$WORK/real.npy" --min-keypoints 1 \
        --allow-multi-polygon --examples 0 --quiet --workers "$(nproc)" || exit 1
    names=()
    IFS=';' read -ra recipes <<<"$RECIPES"
    for recipe in "${recipes[@]}"; do
        name=${recipe%%:*}; flags=${recipe#*:}; names+=("$name")
        # shellcheck disable=SC2086  # the flags are words on purpose
        timeout "$BUDGET" $PY benchmarks/bench_real_slice.py --data "$WORK/real.npy" --coco-root "$COCO_SAMPLE" \
            --out "$WORK/$name" --folds "$FOLDS" --jobs "$JOBS" -- $flags >"$WORK/$name.log" 2>&1 &
    done
    wait
    for name in "${names[@]}"; do
        state=finished; [ -f "$WORK/$name/results.json" ] || state="stopped after $BUDGET s"
        echo "--- $name ($state)"
        cat "$WORK/$name.log"
    done
    echo "all recipes in $((SECONDS - started)) s"
} 2>&1 | tee "$LOG_DIR/real_slice.log"
(cd "$WORK" && find . \( -name '*.log' -o -name '*.json' -o -name 'log.csv' \) -size -2M -print0 |
    tar --null -czf "$LOG_DIR/real_slice.tgz" --files-from=-)
