"""Is the MPL step ever starved? And what does each recipe's input pipeline deliver, before and after a change?

Default mode, three numbers on the same batch settings:
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

`--input_only`: (1) alone for each recipe of `--recipes`, with the recipe's pipeline, augmentation and batch
sizes (gin/data/<recipe>.gin; own data = gin/own_data.gin, whose batches are digits'), on offline data:
  digits          scikit-learn digits, 8x8x1, B=32, U=4B
  npz             own-data defaults (`build_dataset('npz')`) on a synthetic .npz: 32x32x1, 500 labeled, 5,000
                  x_unlabeled; B=32, U=4B
  svhn_1k         generated TFDS files (tools/generated_tfds.py; num_labeled 20), 32x32x3, B=128, U=7B
  cifar10_4k      the same (num_labeled 20, num_validation 10), B=128, U=7B
  imagenet_10pct  generated JPEGs of 166-500 px a side (--max_side), image_size 224, U=15B; B=1024 does not fit
                  a few minutes on 2 cores: B=16 by default (--batch_sizes)
It uses nothing but `mpl_tf.data.build_dataset(...)` and iterating `.train`, the API every version shares, so it
can measure another checkout: each `--repo` tree (default: this one) gets a worker process that imports that
tree's `mpl_tf` (it puts the tree first on sys.path and says which file it imported). The workers take turns,
one block at a time, interleaved per recipe and round (round r: trees in order, the next round reversed: A B, B A,
...), so a drifting load from other jobs falls on both; only one pipeline runs at a time. A block makes a fresh
iterator, discards --warmup elements, times elements until --block_seconds have passed (at least 3), and drops
the iterator. --warmup_rounds whole rounds are untimed. Per recipe it prints the median over rounds of
examples/s and images/s (wall clock), CPU s an element (all threads, `time.process_time`: the work done, less
moved by other jobs than the wall clock) and the last tree / first tree ratio per round: median [min, max].

Examples (the figures in BENCHMARKS.md come from the JSON these write; each records its command):
  python tools/benchmark_input.py --input_steps 60 --warmup 10 --output studies/benchmarks/input_step.json
  python tools/benchmark_input.py --input_only --rounds 3 --output studies/benchmarks/input_recipes.json
  git worktree add /tmp/before <commit>       # a change's before and after, interleaved block by block
  python tools/benchmark_input.py --input_only --repo /tmp/before --repo . --rounds 6
A tree with an older mpl_tf may need what it needed then (keras-cv for trees before the stateless views).
--data_dir keeps the generated files for reuse (a dataset already there is not written again, whatever
--max_side).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# recipe: (build_dataset name, gin/data/<file>.gin holding its batch sizes, TFDS dataset to generate or None,
# build_dataset arguments that fit its split to the generated files)
RECIPES = {
    "digits": ("digits", "digits", None, {}),
    "npz": ("npz", "digits", None, {}),  # gin/own_data.gin includes gin/digits.gin; num_labeled: every image
    "svhn_1k": ("svhn_1k", "svhn_1k", "svhn_cropped", {"num_labeled": 20}),
    "cifar10_4k": ("cifar10_4k", "cifar10_4k", "cifar10", {"num_labeled": 20, "num_validation": 10}),
    "imagenet_10pct": ("imagenet_10pct", "imagenet_10pct", "imagenet2012", {}),
}
REPLY = "@@benchmark_input "  # marks a worker's answer among anything else printed on its stdout


def write_npz(path: str, shape, labeled: int, unlabeled: int = 0) -> str:
  """A synthetic .npz of random uint8 images: x_train / y_train (10 classes), x_test, optional x_unlabeled."""
  rng = np.random.default_rng(0)
  arrays = dict(x_train=rng.integers(0, 256, (labeled, *shape), dtype=np.uint8), y_train=np.arange(labeled) % 10,
                x_test=np.zeros((10, *shape), np.uint8), y_test=np.arange(10))
  if unlabeled:
    arrays["x_unlabeled"] = rng.integers(0, 256, (unlabeled, *shape), dtype=np.uint8)
  np.savez(path, **arrays)
  return path


def _build(args):
  from mpl_tf.data import augment, build_dataset  # pylint: disable=import-outside-toplevel
  common = dict(batch_size=args.batch_size, uda_ratio=args.uda_ratio, two_views=True, seed=0)
  if args.source == "synthetic":
    n = args.synthetic_examples
    path = write_npz(os.path.join(tempfile.mkdtemp(), "synthetic_cifar.npz"), (32, 32, 3), n)
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


def measure_input(data, warmup: int, steps: int = 0, seconds: float = 0.0) -> dict:
  """Wall and CPU seconds per training element of the input pipeline alone, on a fresh iterator: `warmup`
  elements discarded, then `steps` elements timed, or as many (at least 3) as fill `seconds`."""
  iterator = iter(data.train)
  for _ in range(warmup):
    next(iterator)
  count, start, cpu = 0, time.perf_counter(), time.process_time()
  while count < steps or (seconds and (count < 3 or time.perf_counter() - start < seconds)):
    next(iterator)
    count += 1
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  del iterator  # stops the pipeline: the next block (maybe another tree's) runs alone
  return {"s": wall / count, "cpu_s": cpu / count, "elements": count, "load": os.getloadavg()[0]}


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


def measure_steps(model, cached, pipeline, steps: int):
  """Seconds per MPL step fed a cached element, and fed the pipeline.

  Runs the model's compiled train function on persistent iterators (no `fit` set-up, no pipeline restarts)
  in three timed blocks of `steps` consecutive steps: cached, pipeline, cached. The pipeline block is
  bracketed by the two cached ones, whose mean is the cached figure, so that load from other processes on
  a shared machine drifting during the run does not land on one side only; consecutive steps keep the
  pipeline from catching up while another block runs. One untimed step of each traces and warms up.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
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


# --- --input_only: recipes, workers (one per --repo tree), the interleaved rounds ------------------------------
def recipe_arguments(recipe: str, args) -> dict:
  """build_dataset's keyword arguments for `recipe` on the generated data (the recipe's batch sizes)."""
  from checkpoint_sizes import recipe_value  # pylint: disable=import-outside-toplevel
  name, gin_data, _, fit = RECIPES[recipe]
  overrides = dict(item.split("=") for item in args.batch_sizes.split(",") if item)
  kwargs = dict(fit, batch_size=int(overrides.get(recipe, recipe_value(gin_data, "batch_size"))),
                uda_ratio=int(recipe_value(gin_data, "uda_ratio")), two_views=True, seed=0)
  if recipe == "npz":
    kwargs["path"] = os.path.join(args.data_dir, "own_data_32x32x1.npz")
  elif RECIPES[recipe][2]:
    kwargs["data_dir"] = args.data_dir
  if recipe == "imagenet_10pct":
    kwargs["image_size"] = args.image_size
  return dict(kwargs, name=name)  # build_dataset(**kwargs)


def worker(repo: str, warmup: int, block_seconds: float):
  """Serves --input_only blocks on `repo`'s mpl_tf: reads {recipe, kwargs} a line, answers a JSON line."""
  sys.path.insert(0, os.path.abspath(repo))
  import mpl_tf  # pylint: disable=import-outside-toplevel
  from mpl_tf.data import build_dataset  # pylint: disable=import-outside-toplevel
  print(REPLY + json.dumps({"mpl_tf": os.path.dirname(mpl_tf.__file__)}), flush=True)
  bundles = {}
  for line in sys.stdin:
    order = json.loads(line)
    if order["recipe"] not in bundles:
      bundles[order["recipe"]] = build_dataset(**order["kwargs"])
    data = bundles[order["recipe"]]
    examples, views = _per_step(data)
    result = measure_input(data, warmup, seconds=block_seconds)
    result.update(shape=list(data.input_shape), batch_size=data.batch_size,
                  unlabeled_batch_size=data.unlabeled_batch_size, examples=examples, images=views)
    print(REPLY + json.dumps(result), flush=True)


class Worker:
  """A `--worker` process on one tree, started at once; `block(recipe)` times one block there."""

  def __init__(self, repo: str, args, log_dir: str):
    self.repo = os.path.abspath(repo)
    git = ["git", "-C", self.repo]
    commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "mpl_tf"], capture_output=True, text=True).stdout
    self.label = f"{commit or os.path.basename(self.repo)}{'+dirty' if dirty.strip() else ''}"
    self.log = os.path.join(log_dir, f"worker_{len(os.listdir(log_dir))}.log")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--repo", self.repo, "--warmup",
               str(args.warmup), "--block_seconds", str(args.block_seconds)]
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    stderr=open(self.log, "w"), cwd=self.repo)
    self.mpl_tf = None

  def _reply(self) -> dict:
    for line in self.process.stdout:
      if line.startswith(REPLY):
        return json.loads(line[len(REPLY):])
    raise RuntimeError(f"worker on {self.repo} stopped; its log, {self.log}, ends:\n"
                       + "".join(open(self.log).readlines()[-20:]))

  def ready(self):
    self.mpl_tf = self._reply()["mpl_tf"]
    print(f"tree {self.label}: {self.repo}, imports {self.mpl_tf}", flush=True)

  def block(self, recipe: str, kwargs: dict) -> dict:
    self.process.stdin.write(json.dumps({"recipe": recipe, "kwargs": kwargs}) + "\n")
    self.process.stdin.flush()
    return self._reply()

  def close(self):
    self.process.stdin.close()
    self.process.wait()


def _spread(values) -> str:
  return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def compare(args) -> dict:
  """--input_only: every recipe on every tree, interleaved; prints the table and returns the figures."""
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import generated_tfds  # pylint: disable=import-outside-toplevel
  recipes = [r for r in args.recipes.split(",") if r]
  unknown = [r for r in recipes if r not in RECIPES]
  if unknown:
    raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
  args.data_dir = os.path.abspath(args.data_dir or tempfile.mkdtemp(prefix="benchmark_input_"))
  generated_tfds.write(args.data_dir, [RECIPES[r][2] for r in recipes if RECIPES[r][2]], max_side=args.max_side)
  write_npz(os.path.join(args.data_dir, "own_data_32x32x1.npz"), (32, 32, 1), 500, 5000)
  log_dir = tempfile.mkdtemp(prefix="benchmark_input_logs_")
  workers = [Worker(repo, args, log_dir) for repo in (args.repo or [ROOT])]
  for i, w in enumerate(workers):
    w.label += f"#{i}" if [v.label for v in workers].count(w.label) > 1 else ""
  for w in workers:
    w.ready()
  print(f"load average at start: {os.getloadavg()}; rounds: {args.warmup_rounds} untimed + {args.rounds}",
        flush=True)
  arguments = {r: recipe_arguments(r, args) for r in recipes}
  blocks = {r: {w.label: [] for w in workers} for r in recipes}
  for index in range(args.warmup_rounds + args.rounds):
    for recipe in recipes:
      for w in (workers if index % 2 == 0 else workers[::-1]):
        result = w.block(recipe, arguments[recipe])
        if index >= args.warmup_rounds:
          blocks[recipe][w.label].append(result)
        print(f"round {index - args.warmup_rounds:+d} {recipe:15s} {w.label:14s} {result['s']:.3f} s/element "
              f"(cpu {result['cpu_s']:.3f} s, {result['elements']} elements, load {result['load']:.1f})", flush=True)
  for w in workers:
    w.close()
  report = {"recipes": {}, "trees": {w.label: w.repo for w in workers}, "args": vars(args),
            "load_at_end": os.getloadavg()}
  first, last = workers[0].label, workers[-1].label
  for recipe in recipes:
    runs = blocks[recipe]
    figures = {}
    for label, results in runs.items():
      some = results[0]
      figures[label] = {"examples_per_s": statistics.median(some["examples"] / r["s"] for r in results),
                        "images_per_s": statistics.median(some["images"] / r["s"] for r in results),
                        "cpu_s": statistics.median(r["cpu_s"] for r in results), "blocks": results}
    rate = [b["s"] / a["s"] for b, a in zip(runs[first], runs[last])]  # last / first, in examples/s
    cpu = [a["cpu_s"] / b["cpu_s"] for b, a in zip(runs[first], runs[last])]
    report["recipes"][recipe] = dict(figures, rate_ratio=rate, cpu_ratio=cpu)
  print("\n".join(recipes_table(report)))
  print(f"load average at end: {report['load_at_end']}")
  return report


def recipes_table(report) -> list:
  """The --input_only table of a report (also its saved JSON: tools/figures.py renders BENCHMARKS.md's from it):
  per recipe and tree the medians over rounds; with two or more trees, last / first per round."""
  labels = list(report["trees"])
  first, last = labels[0], labels[-1]
  ratio_header = f" {last} / {first}: examples/s, CPU s |" if len(labels) > 1 else ""
  rows = [f"| recipe | shape | B + U | tree | examples/s | images/s | CPU s / element |{ratio_header}",
          "| --- | --- | --- | --- | ---: | ---: | ---: |" + (" --- |" if len(labels) > 1 else "")]
  for recipe, figures in report["recipes"].items():
    some = figures[first]["blocks"][0]
    for label in labels:
      f = figures[label]
      ratio = f" {_spread(figures['rate_ratio'])}; {_spread(figures['cpu_ratio'])} |" if label == last else " |"
      rows.append(f"| {recipe} | {'x'.join(map(str, some['shape']))} | {some['batch_size']} + "
                  f"{some['unlabeled_batch_size']} | {label} | {f['examples_per_s']:,.0f} | "
                  f"{f['images_per_s']:,.0f} | {f['cpu_s']:.3f} |" + (ratio if len(labels) > 1 else ""))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", choices=["synthetic", "mock", "tfds", "digits"], default="synthetic",
                      help="default mode's data (see the docstring)")
  parser.add_argument("--data_dir", default=None, help="TFDS data directory for --source tfds; --input_only: "
                      "where the generated TFDS files and the .npz go (default: a temporary folder)")
  parser.add_argument("--batch_size", type=int, default=32, help="default mode's labeled batch B")
  parser.add_argument("--uda_ratio", type=int, default=7, help="default mode's unlabeled per labeled (U = ratio B)")
  parser.add_argument("--synthetic_examples", type=int, default=5000, help="images of --source synthetic / mock")
  parser.add_argument("--warmup", type=int, default=3, help="input elements discarded before timing")
  parser.add_argument("--input_steps", type=int, default=30, help="default mode's timed input elements")
  parser.add_argument("--mpl_steps", type=int, default=3, help="0 skips the step measurements")
  parser.add_argument("--model", default="wrn28_2", help="default mode's teacher and student network")
  parser.add_argument("--output", default=None, help="write the figures as JSON here")
  parser.add_argument("--input_only", action="store_true", help="input throughput per recipe, per --repo tree")
  parser.add_argument("--recipes", default=",".join(RECIPES), help="--input_only: comma-separated recipes")
  parser.add_argument("--repo", action="append", default=[], help="--input_only: a checkout whose mpl_tf is "
                      "measured (repeatable; ratios are last / first; default: this tool's own checkout)")
  parser.add_argument("--rounds", type=int, default=5, help="--input_only: timed rounds")
  parser.add_argument("--warmup_rounds", type=int, default=1, help="--input_only: untimed rounds first")
  parser.add_argument("--block_seconds", type=float, default=8.0, help="--input_only: timed seconds a block")
  parser.add_argument("--batch_sizes", default="imagenet_10pct=16",
                      help="--input_only: recipe=B overrides of the recipes' labeled batch (U keeps the ratio)")
  parser.add_argument("--image_size", type=int, default=224, help="--input_only: imagenet_10pct's side")
  parser.add_argument("--max_side", type=int, default=500, help="--input_only: generated ImageNet JPEGs' "
                      "largest side (the smallest is a third of it)")
  parser.add_argument("--worker", action="store_true", help="internal: serve --input_only blocks for --repo")
  args = parser.parse_args(argv)
  if args.worker:
    return worker(args.repo[-1], args.warmup, args.block_seconds)
  report = compare(args) if args.input_only else _default_mode(args)
  report["command"] = "python tools/benchmark_input.py " + " ".join(sys.argv[1:] if argv is None else argv)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
  return report


def _default_mode(args) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  data = _build(args)
  examples, views = _per_step(data)
  print(f"data: {data.split_name}  input {data.input_shape}  B={data.batch_size} U={data.unlabeled_batch_size} "
        f"(two views)  {examples} examples / {views} images a step  "
        f"tf.data threads: {os.cpu_count()} CPUs", flush=True)
  input_s = measure_input(data, args.warmup, steps=args.input_steps)["s"]
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
  return report


if __name__ == "__main__":
  main()
