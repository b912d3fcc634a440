"""Are two finished runs the same run? Their metrics.json and every tensor of every phase's last checkpoint.

  python tools/compare_runs.py --a=runs/before --b=runs/after            # one run each
  python tools/compare_runs.py --a=runs/before --b=runs/after --sweep    # every run directory under each

Used to show that a change of code left results unchanged (same seed, same configuration: every weight, optimizer
slot, EMA copy, random generator state and counter bit-identical), and to see how far apart two runs that should
agree are. Skipped: the data iterator's state (a variant tensor) and the checkpoint's object graph, which holds no
value, only how the saved objects link (every value's path is its name, compared anyway). It differs after a
resume: an optimizer restored before its first step tracks its slot list and index dict under other nodes than
one that stepped before its first save. Exit status 1 when any pair differs.

  python tools/compare_runs.py --a=runs/single --b=runs/mesh --tolerance=5e-5   # a mesh run against one device

`--tolerance=T` accepts float differences of at most T times each tensor's largest magnitude (float32 sums taken in
another order, as on a DTensor mesh), and of T times max(1, |value|) in a float metric; every other tensor and
metric must still be equal.
"""
import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("a", None, "a finished run's work directory (or, with --sweep, a parent of several)",
                      required=True)
  flags.DEFINE_string("b", None, "the run (or parent) to compare it with", required=True)
  flags.DEFINE_bool("sweep", False, "compare every run directory (one with metrics.json) found under both")
  flags.DEFINE_float("tolerance", 0.0, "0: bitwise; T > 0: float tensors may differ by T times their largest "
                     "magnitude (see the module docstring)")


def metric_differences(a: dict, b: dict, tolerance: float = 0.0) -> dict:
  """{key: (a's value, b's value)} for every key whose values differ (missing counts as None); with `tolerance`,
  floats that differ by at most tolerance * max(1, |a's value|) count as equal."""
  def same(x, y):
    if tolerance > 0 and isinstance(x, float) and isinstance(y, float):
      return abs(x - y) <= tolerance * max(1.0, abs(x))
    return x == y
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not same(a.get(k), b.get(k))}


OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def checkpoint_differences(a_dir: str, b_dir: str, tolerance: float = 0.0, ignore: Sequence[str] = ()):
  """{phase: (tensors compared, names that differ)} over the phases of either run's checkpoints.

  `tolerance` 0: every tensor bit for bit. T > 0: a float tensor agrees when max|a - b| <= T * max|a|, the other
  tensors must be equal. The iterator state and the object graph are skipped (see the module docstring), and so
  are the names that start with one of `ignore` (e.g. 'random_generators/', which a mesh run does not save).
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def agree(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if tolerance <= 0 or x.shape != y.shape or x.dtype != y.dtype or not np.issubdtype(x.dtype, np.floating):
      return x.shape == y.shape and np.array_equal(x, y)
    return x.size == 0 or float(np.max(np.abs(x - y))) <= tolerance * float(np.max(np.abs(x)))

  out = {}
  phases = set()
  for d in (a_dir, b_dir):
    root = os.path.join(d, "checkpoints")
    phases |= set(os.listdir(root)) if os.path.isdir(root) else set()
  for phase in sorted(phases):
    paths = [tf.train.latest_checkpoint(os.path.join(d, "checkpoints", phase)) for d in (a_dir, b_dir)]
    if None in paths:
      out[phase] = (0, [f"(no checkpoint in {'ab'[paths.index(None)]})"])
      continue
    ra, rb = (tf.train.load_checkpoint(p) for p in paths)
    dtypes, in_b = ra.get_variable_to_dtype_map(), rb.get_variable_to_dtype_map()
    def compared(names):
      return sorted(n for n in names if dtypes.get(n, in_b.get(n)) != tf.variant and n != OBJECT_GRAPH
                    and not n.startswith(tuple(ignore)))
    names = compared(dtypes)
    differ = [n for n in names if n not in in_b or not agree(ra.get_tensor(n), rb.get_tensor(n))]
    differ += [f"{n} (only in b)" for n in compared(set(in_b) - set(dtypes))]
    out[phase] = (len(names), differ)
  return out


def compare(a_dir: str, b_dir: str, tolerance: float = 0.0) -> bool:
  """Prints one line for the pair; True when the metrics and every checkpoint tensor are identical (with
  `tolerance` > 0: agree to it)."""
  with open(os.path.join(a_dir, "metrics.json")) as fa, open(os.path.join(b_dir, "metrics.json")) as fb:
    metrics = metric_differences(json.load(fa), json.load(fb), tolerance)
  phases = checkpoint_differences(a_dir, b_dir, tolerance)
  same = not metrics and not any(differ for _, differ in phases.values())
  equal, alike = ("equal", "identical") if tolerance <= 0 else (f"within {tolerance:g}", f"within {tolerance:g}")
  parts = [f"{phase} {n - len(differ)}/{n} tensors {equal}" + (f" (first that differ: {differ[:3]})" if differ else "")
           for phase, (n, differ) in phases.items()]
  print(f"{os.path.basename(a_dir.rstrip('/'))}: {alike if same else 'DIFFERENT'}; metrics "
        f"{alike if not metrics else metrics}; " + "; ".join(parts))
  return same


def main(argv):
  del argv
  if FLAGS.sweep:
    names = sorted(n for n in os.listdir(FLAGS.a) if os.path.exists(os.path.join(FLAGS.a, n, "metrics.json")))
    pairs = [(os.path.join(FLAGS.a, n), os.path.join(FLAGS.b, n)) for n in names]
  else:
    pairs = [(FLAGS.a, FLAGS.b)]
  results = []
  for a_dir, b_dir in pairs:
    if not os.path.exists(os.path.join(b_dir, "metrics.json")):
      print(f"{os.path.basename(a_dir)}: missing in {FLAGS.b}")
      results.append(False)
      continue
    results.append(compare(a_dir, b_dir, FLAGS.tolerance))
  sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
