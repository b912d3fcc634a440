"""Are two finished runs the same run? Their metrics.json and every tensor of every phase's last checkpoint.

  python tools/compare_runs.py --a=runs/before --b=runs/after            # one run each
  python tools/compare_runs.py --a=runs/before --b=runs/after --sweep    # every run directory under each

Used to show that a change of code left results unchanged (same seed, same configuration: every weight, optimizer
slot, EMA copy and counter bit-identical), and to see how far apart two runs that should agree are. The data
iterator's state is skipped (a variant tensor). Exit status 1 when any pair differs.
"""
import json
import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("a", None, "a finished run's work directory (or, with --sweep, a parent of several)",
                      required=True)
  flags.DEFINE_string("b", None, "the run (or parent) to compare it with", required=True)
  flags.DEFINE_bool("sweep", False, "compare every run directory (one with metrics.json) found under both")


def metric_differences(a: dict, b: dict) -> dict:
  """{key: (a's value, b's value)} for every key whose values differ (missing counts as None)."""
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def checkpoint_differences(a_dir: str, b_dir: str):
  """{phase: (tensors compared, names that differ)} over the phases of `a_dir`'s checkpoints."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  out = {}
  root = os.path.join(a_dir, "checkpoints")
  for phase in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    paths = [tf.train.latest_checkpoint(os.path.join(d, "checkpoints", phase)) for d in (a_dir, b_dir)]
    if paths[1] is None:
      out[phase] = (0, ["(no checkpoint in b)"])
      continue
    ra, rb = (tf.train.load_checkpoint(p) for p in paths)
    dtypes, in_b = ra.get_variable_to_dtype_map(), rb.get_variable_to_dtype_map()
    names = [n for n, dtype in dtypes.items() if dtype != tf.variant]
    differ = [n for n in sorted(names) if n not in in_b or not np.array_equal(ra.get_tensor(n), rb.get_tensor(n))]
    out[phase] = (len(names), differ)
  return out


def compare(a_dir: str, b_dir: str) -> bool:
  """Prints one line for the pair; True when the metrics and every checkpoint tensor are identical."""
  with open(os.path.join(a_dir, "metrics.json")) as fa, open(os.path.join(b_dir, "metrics.json")) as fb:
    metrics = metric_differences(json.load(fa), json.load(fb))
  phases = checkpoint_differences(a_dir, b_dir)
  same = not metrics and not any(differ for _, differ in phases.values())
  parts = [f"{phase} {n - len(differ)}/{n} tensors equal" + (f" (first that differ: {differ[:3]})" if differ else "")
           for phase, (n, differ) in phases.items()]
  print(f"{os.path.basename(a_dir.rstrip('/'))}: {'identical' if same else 'DIFFERENT'}; metrics "
        f"{'identical' if not metrics else metrics}; " + "; ".join(parts))
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
    results.append(compare(a_dir, b_dir))
  sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
