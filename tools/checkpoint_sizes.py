"""How big each paper recipe's checkpoints are, and how much of that is the `tf.data` iterator's state.

The trainer (`mpl_tf/trainer.py`) checkpoints its data iterator with the networks, so that a resumed run goes on
at the same element. What `tf.data` writes for an iterator depends on the pipeline: a shuffle buffer is saved
element by element, and without symbolic checkpointing so is every prefetched batch and every in-flight parallel
map result (decoded float images: an ImageNet element at batch 1024 + 15 x 1024 in two views is ~19 GB). This
tool runs each recipe through the real command line on small generated TFDS datasets (`generated_tfds.py`), with
the recipe's own data pipeline and batch sizes unless told otherwise and a small network (`cnn_small`: the
network part is not what is measured), then reads every phase's last checkpoint:
  total      bytes of the checkpoint (.data + .index)
  iterator   bytes of the iterator's state: the .data file less every other tensor in it
  model      the rest (networks, EMA student, optimizer slots, step, MPL baseline)
A second run of the same command in the same work directory restores every phase's checkpoint, iterator
included (each phase is finished, so it ends at once): the tool checks it exits cleanly with the same metrics.

With a few hundred generated examples a shuffle buffer holds at most those, so a buffer's share is a lower bound
for the real datasets; batches are real size unless `--batch_size` / `--uda_ratio` shrink them.

Example (the BENCHMARKS.md table; ~10 min on a busy 2-core CPU; the JSON records the command):
  python tools/checkpoint_sizes.py --output studies/benchmarks/checkpoint_sizes.json
  python tools/checkpoint_sizes.py --recipes=cifar10_4k --batch_size=4 --uda_ratio=2    # the quick version
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import generated_tfds  # pylint: disable=wrong-import-position

# recipe: (TFDS name, bindings that fit the recipe's split to a few hundred generated examples)
RECIPES: Dict[str, tuple] = {
    "svhn_1k": ("svhn_cropped", ("build_dataset.num_labeled = 20",)),
    "cifar10_4k": ("cifar10", ("build_dataset.num_labeled = 20", "build_dataset.num_validation = 10")),
    "imagenet_10pct": ("imagenet2012", ()),
}
SMALL_NETWORK = ("network.name = 'cnn_small'", "network.strides = 'auto'")


def recipe_gin_files(recipe: str) -> Tuple[str, str]:
  """The recipe's gin file, then gin/smoke.gin (a few steps of every phase, batches of 4 + 2 x 4)."""
  return (f"gin/{recipe}.gin", "gin/smoke.gin")


def recipe_bindings(recipe: str, data_dir: str) -> Tuple[str, ...]:
  """Bindings that point `recipe` at generated data in `data_dir` and give it a small network."""
  return (f"build_dataset.data_dir = '{data_dir}'",) + RECIPES[recipe][1] + SMALL_NETWORK


def recipe_command(recipe: str, workdir: str, data_dir: str, bindings=(), python: str = sys.executable) -> List[str]:
  """`python -m mpl_tf.train` on gin/<recipe>.gin shrunk by gin/smoke.gin, reading `data_dir`, small network."""
  bound = recipe_bindings(recipe, data_dir) + tuple(bindings)
  return ([python, "-m", "mpl_tf.train", f"--workdir={workdir}"] + [f"--gin_file={f}" for f in recipe_gin_files(recipe)]
          + [f"--gin_bindings={b}" for b in bound])


def checkpoint_bytes(checkpoint: str) -> Dict[str, int]:
  """{total, iterator, model} bytes of one checkpoint (a prefix, as `tf.train.latest_checkpoint` gives)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  folder, prefix = os.path.split(checkpoint)
  files = [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(prefix + ".")]
  data = sum(os.path.getsize(f) for f in files if ".data-" in f)
  reader = tf.train.load_checkpoint(checkpoint)
  other = 0
  for name in reader.get_variable_to_shape_map():
    if "ITERATOR_STATE" in name:
      continue  # a variant tensor: numpy cannot hold it, which is why it is measured as the remainder
    value = np.asarray(reader.get_tensor(name))
    other += len(value.item()) if value.dtype.kind in "SO" and value.ndim == 0 else value.nbytes
  return {"total": sum(os.path.getsize(f) for f in files), "iterator": data - other, "model": other}


def measure(recipe: str, root: str, data_dir: str, bindings=()) -> Dict[str, object]:
  """Trains `recipe`, measures its phases' last checkpoints, re-runs it to restore them; returns the figures."""
  workdir = os.path.join(root, recipe)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  command = recipe_command(recipe, workdir, data_dir, bindings)
  start = time.time()
  first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  seconds = time.time() - start
  if first.returncode:
    raise RuntimeError(f"{recipe}: training failed:\n{first.stderr[-3000:]}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  phases = {}
  for phase in sorted(os.listdir(os.path.join(workdir, "checkpoints"))):
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints", phase))
    phases[phase] = dict(checkpoint_bytes(latest), checkpoint=os.path.basename(latest))
  start = time.time()
  second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  restore_seconds = time.time() - start
  if second.returncode:
    raise RuntimeError(f"{recipe}: re-running (restoring every checkpoint) failed:\n{second.stderr[-3000:]}")
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  return {"recipe": recipe, "bindings": list(bindings), "phases": phases, "train_seconds": round(seconds, 1),
          "rerun_seconds": round(restore_seconds, 1), "step": metrics["step"]}


def table(results: List[Dict[str, object]]) -> str:
  """A markdown table: one row per recipe and phase, sizes in MB (the iterator's in kB)."""
  rows = ["| recipe | bindings | phase | checkpoint MB | iterator kB | model MB |", "| --- | --- | --- | ---: | ---: | ---: |"]
  for r in results:
    for phase, s in r["phases"].items():
      rows.append(f"| {r['recipe']} | {'; '.join(r['bindings']) or '-'} | {phase} | {s['total'] / 1e6:.2f} | "
                  f"{s['iterator'] / 1e3:.1f} | {s['model'] / 1e6:.2f} |")
  return "\n".join(rows)


def main(argv: Optional[List[str]] = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated gin/<recipe>.gin names")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data directory; missing datasets are generated into it (default: a temporary one)")
  parser.add_argument("--workdir", default=None, help="where the runs go (default: a temporary folder)")
  parser.add_argument("--batch_size", type=int, default=None, help="labeled batch (default: the recipe's)")
  parser.add_argument("--uda_ratio", type=int, default=None, help="unlabeled per labeled (default: the recipe's)")
  parser.add_argument("--image_size", type=int, default=None, help="imagenet_10pct's side (default: 224)")
  parser.add_argument("--binding", action="append", default=[], help="a further gin binding (repeatable)")
  parser.add_argument("--output", default=None, help="write the figures as JSON here")
  args = parser.parse_args(argv)
  root = args.workdir or tempfile.mkdtemp(prefix="checkpoint_sizes_")
  data_dir = args.data_dir or os.path.join(root, "tfds")
  recipes = [r for r in args.recipes.split(",") if r]
  generated_tfds.write(data_dir, [RECIPES[r][0] for r in recipes])
  results = []
  for recipe in recipes:
    # smoke.gin shrinks the batches: put the recipe's own back unless told otherwise
    bindings = [f"build_dataset.{key} = {value if value is not None else recipe_value(recipe, key)}"
                for key, value in (("batch_size", args.batch_size), ("uda_ratio", args.uda_ratio))]
    if args.image_size and recipe == "imagenet_10pct":
      bindings.append(f"build_dataset.image_size = {args.image_size}")
    results.append(measure(recipe, root, data_dir, bindings + list(args.binding)))
    print(f"{recipe}: trained in {results[-1]['train_seconds']} s, re-ran (restored) in "
          f"{results[-1]['rerun_seconds']} s", flush=True)
  print(table(results))
  if args.output:
    with open(args.output, "w") as f:
      json.dump({"command": "python tools/checkpoint_sizes.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "results": results}, f, indent=1)


def recipe_value(recipe: str, key: str) -> str:
  """A `build_dataset` binding's value in gin/data/<recipe>.gin (the recipe's batch size, uda ratio)."""
  with open(os.path.join(ROOT, "gin", "data", f"{recipe}.gin")) as f:
    for line in f:
      if line.split("#")[0].split("=")[0].strip() == f"build_dataset.{key}":
        return line.split("#")[0].split("=", 1)[1].strip()
  raise KeyError(f"gin/data/{recipe}.gin binds no build_dataset.{key}")


if __name__ == "__main__":
  main()
