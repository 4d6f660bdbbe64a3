#!/usr/bin/env bash
# The accelerator check: one command for a machine with a GPU, bounded by its time
# limits (230 s of benchmarks + 2 x SLICE_S = 120 s of slices, plus start-up).
#
#   bash benchmarks/device_check.sh [OUT]        # OUT defaults to runs/device_check
#   TINY=1 bash benchmarks/device_check.sh OUT   # the same commands at a tiny scale (CPU test):
#                                                # the imagenet benchmark only, 2 x 2 slices
#
# 1. the benchmarks that say most about an accelerator (ImageNet fitness,
#    evolution), each with its own time limit;
# 2. a time-bounded slice of fool:imagenet_cppn_full and fool:imagenet_direct_full
#    (10-crop fitness, the original's populations), each stopped after SLICE_S
#    seconds; the runs checkpoint, so the same command with a larger budget
#    continues them;
# 3. the throughput (evals/s) and the curve so far of each slice.
# Everything goes to OUT (logs included); the last lines are the figures.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/device_check}
PY=${PYTHON:-python}
mkdir -p "$OUT"
if [[ "${TINY:-0}" == 1 ]]; then
  BENCH=(-m benchmarks.run_all --only imagenet --timeout 200)
  SLICE_S=${SLICE_S:-300}
  FLAGS=(--config.population=2 --config.generations=2 --config.log_every=1
         --config.checkpoint_every=1 --config.classifier=tests.user_models:tiny_rgb224_classifier)
else
  BENCH=(-m benchmarks.run_all --only imagenet,evolution --timeout 100)
  SLICE_S=${SLICE_S:-120}
  FLAGS=(--config.generations=5001 --config.log_every=5 --config.checkpoint_every=25)
fi
echo "== devices"
"$PY" -c "import jax; print(jax.devices())" 2>&1 | tail -1
echo "== benchmarks"
timeout 230 "$PY" "${BENCH[@]}" > "$OUT/benchmarks.log" 2>&1
echo "benchmarks exit status $? (log: $OUT/benchmarks.log)"
grep -E "evals/s|ratio|\| " "$OUT/benchmarks.log" | tail -20
for encoding in cppn direct; do
  echo "== fool:imagenet_${encoding}_full, at most ${SLICE_S} s"
  timeout "$SLICE_S" "$PY" -m experiments.nguyen2015.fool \
      --config=experiments/nguyen2015/configs/fool.py:imagenet_${encoding}_full \
      --workdir="$OUT/$encoding" "${FLAGS[@]}" > "$OUT/$encoding.log" 2>&1
  status=$?
  echo "exit status $status ($([[ $status == 124 ]] && echo "stopped by the time limit" || echo finished))"
  "$PY" -m benchmarks.curve_so_far "$OUT/$encoding"
done
