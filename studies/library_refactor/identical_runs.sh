#!/bin/bash
# The runs issue 28's refactor must leave bit-identical (studies/library_refactor/README.md).
# usage: identical_runs.sh CODE_DIR OUT_DIR DATA_DIR [names...]
#   CODE_DIR  a checkout of the code to measure (e.g. a `git worktree` of the commit before the change)
#   OUT_DIR   where each run's work directory goes (OUT_DIR/<name>)
#   DATA_DIR  holds digits_npz.npz (tools/standins.py --which=digits_npz) and tfds/ (tools/generated_tfds.py
#             --datasets=svhn_cropped); both are written here when missing, with CODE_DIR's tools.
#   names     a subset of the runs below (default: all)
# Then: python tools/compare_runs.py --a=OUT_DIR_BEFORE --b=OUT_DIR_AFTER --sweep
set -u
CODE=$(cd "$1" && pwd); OUT=$(mkdir -p "$2" && cd "$2" && pwd); DATA=$(mkdir -p "$3" && cd "$3" && pwd); shift 3
PY=${PYTHON:-python}
ONLY=" $* "
cd "$CODE"
export TF_NUM_INTRAOP_THREADS=1 PYTHONPATH=$CODE TF_CPP_MIN_LOG_LEVEL=2
[ -f "$DATA/digits_npz.npz" ] || $PY tools/standins.py --which=digits_npz --out="$DATA" > /dev/null
[ -d "$DATA/tfds/svhn_cropped" ] || $PY tools/generated_tfds.py --data_dir="$DATA/tfds" --datasets=svhn_cropped > /dev/null
run() {
  name=$1; shift
  if [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]]; then
    start=$(date +%s); $PY -m mpl_tf.train --workdir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
    echo "$name rc=$? $(( $(date +%s) - start ))s"
  fi
}
D=(--gin_file=gin/digits.gin --gin_file=gin/smoke.gin "--gin_bindings=run.steps = 10")
O=(--gin_file=gin/own_data.gin --gin_file=gin/smoke.gin "--gin_bindings=build_dataset.path = '$DATA/digits_npz.npz'"
   "--gin_bindings=distill.steps = 4")
SVHN=(--gin_file=gin/svhn_1k.gin --gin_file=gin/smoke.gin "--gin_bindings=build_dataset.data_dir = '$DATA/tfds'"
      "--gin_bindings=build_dataset.num_labeled = 20" "--gin_bindings=network.name = 'cnn_small'"
      "--gin_bindings=network.strides = 'auto'" "--gin_bindings=build_dataset.image_size = 32")
RECOMPUTE="--gin_bindings=MetaPseudoLabelsModel.teacher_activations = 'recompute'"
run digits "${D[@]}"
run digits_recompute "${D[@]}" "$RECOMPUTE"
run digits_reduced --gin_file=gin/digits_reduced_mpl.gin --gin_file=gin/smoke.gin "--gin_bindings=run.steps = 10" \
    "--gin_bindings=big_teacher/optimizer.warmup_steps = 1"
run digits_uda "${D[@]}" "--gin_bindings=run.method = 'uda'"
run digits_supervised "${D[@]}" "--gin_bindings=run.method = 'supervised'"
run own "${O[@]}"
run own_recompute "${O[@]}" "$RECOMPUTE"
run own_off "${O[@]}" "--gin_bindings=MetaPseudoLabelsModel.mpl_weight = 0.0"
run own_uda_distill "${O[@]}" "--gin_bindings=run.method = 'uda_distill'"
run own_dot "${O[@]}" "--gin_bindings=MetaPseudoLabelsModel.pseudo_labels = 'sample'" \
    "--gin_bindings=MetaPseudoLabelsModel.feedback = 'dot_product'"
run own_sample_recompute "${O[@]}" "--gin_bindings=MetaPseudoLabelsModel.pseudo_labels = 'sample'" \
    "--gin_bindings=MetaPseudoLabelsModel.feedback = 'label_effect'" "$RECOMPUTE"
run two_moons --gin_file=gin/two_moons.gin "--gin_bindings=run.steps = 1000" "--gin_bindings=run.steps_per_execution = 100" \
    "--gin_bindings=run.checkpoint_every = 500"
run svhn "${SVHN[@]}"
run svhn_recompute "${SVHN[@]}" "$RECOMPUTE"
