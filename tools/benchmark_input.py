"""Is the MPL step ever starved? Input-pipeline throughput next to the step's consumption rate.

Three numbers, on the same batch settings:
  1. input: elements/s of `build_dataset(...).train` alone (labeled weak view + unlabeled weak and strong
     views), reported as examples/s and views/s (images produced, counting both unlabeled views);
  2. step: the MPL step of two WRN-28-2 (teacher and student) fed one cached element, so the input costs
     nothing: the rate at which the step consumes examples;
  3. end to end: the same step fed by the real pipeline; if it is not slower than (2), the step is not starved.
Step times are means over blocks of --mpl_steps consecutive steps: cached, pipeline-fed, cached.
The input and the step share this machine's cores, so (3) is the honest test; (1) / (2) is the headroom.

Sources (`--source`): `synthetic` (default, offline: random uint8 32x32x3 images through the CIFAR-10-4K
augmentation: Table 5 ops, M=16, flips, pad-and-crop, Cutout), `mock` (cifar10_4k on tfds.testing.mock_data;
its generator is slow, so this measures the mock, not the pipeline), `tfds` (a prepared cifar10_4k; pass
--data_dir), `digits`.

Example (small settings, a few minutes on 2 CPU cores):
  python tools/benchmark_input.py --batch_size 32 --uda_ratio 7 --input_steps 30 --mpl_steps 3
Measured (--input_steps 60 --warmup 10, 2 shared CPU cores, CIFAR augmentation on 32x32): the pipeline gives
4,130-5,223 images/s with both views, while the WRN-28-2 MPL step on the same batch takes 12.9-15.4 s: ~130x
headroom, the step is never starved. Digits with `cnn_small` is the exception on CPU: input and step share the
two cores.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=wrong-import-position

from mpl_tf.data import augment, build_dataset  # pylint: disable=wrong-import-position


def _build(args):
  common = dict(batch_size=args.batch_size, uda_ratio=args.uda_ratio, two_views=True, seed=0)
  if args.source == "synthetic":
    path = os.path.join(tempfile.mkdtemp(), "synthetic_cifar.npz")
    rng = np.random.default_rng(0)
    n = args.synthetic_examples
    np.savez(path, x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n) % 10,
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10))
    return build_dataset("npz", path=path, num_labeled=4000 if n > 8000 else n // 4 // 10 * 10,
                         augment_ops=augment.CIFAR10_OPS, augment_magnitude=16.0, cutout_fraction=0.5, flip=True,
                         **common)
  if args.source == "mock":
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    with tfds.testing.mock_data(num_examples=args.synthetic_examples):
      return build_dataset("cifar10_4k", num_labeled=100, num_validation=100, **common)
  if args.source == "tfds":
    return build_dataset("cifar10_4k", data_dir=args.data_dir, **common)
  return build_dataset("digits", **common)


def _per_step(data):
  examples = data.batch_size + data.unlabeled_batch_size
  views = data.batch_size + 2 * data.unlabeled_batch_size
  return examples, views


def measure_input(data, warmup: int, steps: int) -> float:
  """Seconds per training element of the input pipeline alone."""
  iterator = iter(data.train)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return (time.perf_counter() - start) / steps


def _mpl_model(data, model_name: str):
  from mpl_tf import MetaPseudoLabelsModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.uda import UDASettings  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  from mpl_tf.models.builder import build_model  # pylint: disable=import-outside-toplevel
  teacher = build_model(model_name, num_classes=data.num_classes, input_shape=data.input_shape)
  student = build_model(model_name, num_classes=data.num_classes, input_shape=data.input_shape)
  model = MetaPseudoLabelsModel(teacher=teacher, student=student,
                                uda=UDASettings(weight=1.0, temperature=0.7, threshold=0.6))
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                student_optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
  return model


def measure_steps(model, cached: tf.data.Dataset, pipeline: tf.data.Dataset, steps: int):
  """Seconds per MPL step fed a cached element, and fed the pipeline.

  Runs the model's compiled train function on persistent iterators (no `fit` set-up, no pipeline restarts)
  in three timed blocks of `steps` consecutive steps: cached, pipeline, cached. The pipeline block is
  bracketed by the two cached ones, whose mean is the cached figure, so that load from other processes on
  a shared machine drifting during the run does not land on one side only; consecutive steps keep the
  pipeline from catching up while another block runs. One untimed step of each traces and warms up.
  """
  train_function = model.make_train_function()
  iterators = {"cached": iter(cached), "pipeline": iter(pipeline)}

  def block(key, count):
    start = time.perf_counter()
    for _ in range(count):
      logs = train_function(iterators[key])
      tf.nest.map_structure(lambda t: t.numpy(), logs)  # wait for the step to finish
    return (time.perf_counter() - start) / max(count, 1)

  block("cached", 1)
  block("pipeline", 1)
  before, fed, after = block("cached", steps), block("pipeline", steps), block("cached", steps)
  return (before + after) / 2, fed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", choices=["synthetic", "mock", "tfds", "digits"], default="synthetic")
  parser.add_argument("--data_dir", default=None, help="TFDS data directory for --source tfds")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--uda_ratio", type=int, default=7)
  parser.add_argument("--synthetic_examples", type=int, default=5000)
  parser.add_argument("--warmup", type=int, default=3, help="input elements discarded before timing")
  parser.add_argument("--input_steps", type=int, default=30)
  parser.add_argument("--mpl_steps", type=int, default=3, help="0 skips the step measurements")
  parser.add_argument("--model", default="wrn28_2")
  parser.add_argument("--output", default=None, help="write the figures as JSON here")
  args = parser.parse_args(argv)

  data = _build(args)
  examples, views = _per_step(data)
  print(f"data: {data.split_name}  input {data.input_shape}  B={data.batch_size} U={data.unlabeled_batch_size} "
        f"(two views)  {examples} examples / {views} images a step  "
        f"tf.data threads: {os.cpu_count()} CPUs", flush=True)
  input_s = measure_input(data, args.warmup, args.input_steps)
  report = {"source": args.source, "batch_size": data.batch_size,
            "unlabeled_batch_size": data.unlabeled_batch_size, "cpus": os.cpu_count(),
            "input_s_per_step": input_s, "input_examples_per_s": examples / input_s,
            "input_images_per_s": views / input_s}
  print(f"input pipeline alone: {input_s:.3f} s/element = {examples / input_s:,.0f} examples/s = "
        f"{views / input_s:,.0f} images/s (both views)", flush=True)

  if args.mpl_steps:
    model = _mpl_model(data, args.model)
    cached = tf.data.Dataset.from_tensors(next(iter(data.train))).repeat()
    step_s, e2e_s = measure_steps(model, cached, data.train, args.mpl_steps)
    print(f"MPL step ({args.model} teacher + student, UDA on), cached input: {step_s:.2f} s/step = "
          f"{examples / step_s:,.0f} examples/s = {views / step_s:,.0f} images/s consumed", flush=True)
    print(f"MPL step fed by the pipeline: {e2e_s:.2f} s/step ({100 * (e2e_s / step_s - 1):+.0f}% vs cached)")
    print(f"headroom: the pipeline produces {step_s / input_s:.1f}x what the step consumes")
    report.update(model=args.model, step_s_cached=step_s, step_s_end_to_end=e2e_s,
                  step_examples_per_s=examples / step_s, headroom=step_s / input_s)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == "__main__":
  main()
