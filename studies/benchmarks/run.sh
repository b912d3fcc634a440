#!/usr/bin/env bash
# Regenerates every JSON in this folder, the data of BENCHMARKS.md (and of docs/usage.md's and docs/dtensor.md's
# figures), then renders the documents from them. Run from the repository root on an otherwise idle machine;
# about 2.5 hours on 2 cores. Two queues run side by side, each pinned to one core (taskset), so that every
# benchmark has one core of its own; each JSON records the command that wrote it.
#   bash studies/benchmarks/run.sh [PYTHON]
set -euo pipefail
PY=${1:-python}
OUT=studies/benchmarks
core() { taskset -c "$1" "$PY" "${@:2}"; }

(  # core 0: the step (keep and recompute), the leaky ReLU against Keras', DTensor
  core 0 tools/benchmark_step.py --jit off --warmup 1 --steps 5 \
      --variants hard,hard+uda,soft,soft+uda,hard+recompute,hard+uda+recompute,soft+recompute,soft+uda+recompute \
      --output $OUT/step.json
  core 0 tools/benchmark_step.py --jit off --warmup 1 --steps 5 --variants hard+uda --compare_keras_leaky_relu \
      --output $OUT/step_leaky_relu.json
  core 0 tools/benchmark_dtensor.py --memory --output $OUT/dtensor_memory.json
  core 0 tools/benchmark_dtensor.py --model wrn28_2 --image_size 32 --channels 3 --batch 8 \
      --output $OUT/dtensor_step_wrn28_2.json
  core 0 tools/benchmark_dtensor.py --output $OUT/dtensor_step_cnn_small.json
) & first=$!
(  # core 1: checkpoints, the image folder, input, XLA
  core 1 tools/checkpoint_sizes.py --batch_size=4 --uda_ratio=2 --output $OUT/checkpoint_sizes_smoke.json
  core 1 tools/checkpoint_sizes.py --recipes=svhn_1k,cifar10_4k --output $OUT/checkpoint_sizes.json
  core 1 tools/benchmark_folder_source.py --output=$OUT/folder_source.json
  core 1 tools/benchmark_input.py --input_steps 60 --warmup 10 --output $OUT/input_step.json
  core 1 tools/benchmark_input.py --input_only --rounds 3 --output $OUT/input_recipes.json
  core 1 tools/benchmark_step.py --jit both --warmup 1 --steps 5 --output $OUT/step_xla.json
) & second=$!
wait $first
wait $second
"$PY" tools/figures.py --write
