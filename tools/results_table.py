"""Runs `python -m mpl_tf.train` for several methods and seeds and writes a markdown table of the results.

  python tools/results_table.py --gin_file=gin/digits.gin --methods=supervised,uda,mpl --seeds=0,1,2 \\
      --out=studies/digits_results/digits_results.md --workroot=runs/digits_results

Each (method, seed) run gets its own work directory, so an interrupted sweep resumes where it stopped (the
trainer resumes unfinished runs; finished ones are read from their metrics.json). The table gives mean, std
and per-seed test accuracy of the (finetuned) student, and of the teacher where the method has one.
"""
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mpl_tf import runs as run_lib  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("gin_file", "gin/digits.gin", "experiment gin file shared by all runs")
flags.DEFINE_list("methods", ["supervised", "uda", "mpl"], "values for run.method")
flags.DEFINE_list("seeds", ["0", "1", "2"], "values for run.seed (data split and initialisation)")
flags.DEFINE_multi_string("gin_bindings", [], "extra bindings applied to every run")
flags.DEFINE_string("workroot", "runs/results", "parent of the per-run work directories")
flags.DEFINE_string("out", "docs/results.md", "markdown file to write")


def run_one(method: str, seed: str) -> dict:
  return run_lib.train(FLAGS.gin_file, os.path.join(FLAGS.workroot, f"{method}.seed{seed}"),
               [f"run.method = '{method}'", f"run.seed = {seed}"] + FLAGS.gin_bindings)


def main(argv):
  del argv
  results = {m: [run_one(m, s) for s in FLAGS.seeds] for m in FLAGS.methods}
  prefix = run_lib.thread_prefix()  # the thread count the figures were measured with
  command = (f"{prefix}python tools/results_table.py --gin_file={FLAGS.gin_file} --methods={','.join(FLAGS.methods)} "
             f"--seeds={','.join(FLAGS.seeds)} --out={FLAGS.out}"
             + "".join(f" --gin_bindings=\"{b}\"" for b in FLAGS.gin_bindings))
  lines = [f"Test accuracy (%) over seeds {', '.join(FLAGS.seeds)}; command: `{command}`", "",
           *run_lib.results_table(results)]
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
    json.dump({"command": command, "results": results}, f, indent=2, sort_keys=True)
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
