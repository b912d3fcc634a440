"""Does MPL help on *your* data? Supervised, UDA and MPL (optionally Pseudo Labels) over a few seeds, one table,
one plot, one sentence.

  python tools/compare.py --gin_bindings="build_dataset.path = 'my.npz'" --out=runs/compare/mine.md

Every method trains with the same gin recipe (default `gin/own_data.gin`: the own-data augmentation defaults,
small CNN with strides from the image size), the same data, seeds and --steps, each run in its own cached
work directory under --workroot (an interrupted comparison resumes). The table gives each method's test
accuracy (the exported student, after finetuning; after the method's main phase, i.e. for MPL before its
distill phase; before finetuning; the teacher where there is one), then
MPL's finetuned student minus each baseline paired by seed, the student's gap to its own teacher (and, from
TensorBoard, that gap on held-out data every `run.eval_every` steps of MPL, gin/own_data.gin: 250). The last
line says in words whether MPL helped: better than the best baseline on every seed with a paired t above 2
(at least 3 seeds) is "helped"; the mirror image is "hurt"; anything else is "no measurable difference".
A few seeds on a small budget answer "is something badly wrong", not "by how much": for a claim, use more seeds.
"""
import json
import os
import statistics
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_lib  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so that tests can import the module beside other tools' flags."""
  flags.DEFINE_string("gin_file", "gin/own_data.gin", "recipe shared by every method")
  flags.DEFINE_multi_string("gin_bindings", [], "bindings for every run: at least the data, e.g. "
                            "\"build_dataset.path = 'my.npz'\"")
  flags.DEFINE_list("methods", ["supervised", "uda", "mpl"],
                    "methods to compare: mpl, baselines among supervised, uda, pseudo_labels, and optionally "
                    "reduced_mpl (its recipe: the same gin plus gin/algorithms/reduced_mpl.gin)")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "values for run.seed")
  flags.DEFINE_integer("steps", 1500, "training steps of every method's main phase (a small budget)")
  flags.DEFINE_string("workroot", "runs/compare", "parent of the per-run work directories")
  flags.DEFINE_string("out", "runs/compare/compare.md", "markdown file to write (its .json and .png beside it)")


BASELINES = ("supervised", "uda", "pseudo_labels")
REDUCED_MPL_GIN = "gin/algorithms/reduced_mpl.gin"


def run_one(method: str, seed: str) -> dict:
  extra = [f"include '{REDUCED_MPL_GIN}'"] if method == "reduced_mpl" else []
  bindings = extra + [f"run.method = '{method}'", f"run.seed = {seed}", f"STEPS = {FLAGS.steps}"]
  bindings += FLAGS.gin_bindings
  return run_lib.train(FLAGS.gin_file, os.path.join(FLAGS.workroot, f"{method}.seed{seed}"), bindings)


def verdict(diffs_by_baseline: dict) -> str:
  """The plain sentence: against the best baseline (largest mean accuracy), helped / hurt / no difference."""
  name, diffs = min(diffs_by_baseline.items(), key=lambda kv: statistics.mean(kv[1]))
  p = run_lib.paired_stats(diffs)
  n = len(diffs)
  figure = f"{p['mean']:+.2f} +- {p['std']:.2f} points against {name}, better on {p['better']} of {n} seeds"
  if n >= 3 and p["better"] == n and p["t"] > 2:
    return f"MPL helped on this data: its student is {figure}."
  if n >= 3 and p["worse"] == n and p["t"] < -2:
    return f"MPL hurt on this data: its student is {figure}."
  return f"No measurable difference: MPL's student is {figure} (the best baseline)."


def gap_curve(workdirs, phase: str = "mpl") -> dict:
  """{step: mean over runs of the teacher's minus the student's held-out accuracy, in points} over `phase` (mpl,
  or distill), from the `<split>/teacher_minus_student` scalars the trainer writes every `run.eval_every` steps."""
  per_step = {}
  for workdir in workdirs:
    gaps = {tag.split("/")[0]: by_step for tag, by_step in run_lib.scalars(workdir, phase).items()
            if tag.endswith("/teacher_minus_student")}
    # The validation split's curve when the run holds one out (the trainer writes test's too), else test's.
    for step, value in gaps.get("validation", gaps.get("test", {})).items():
      per_step.setdefault(step, []).append(100 * value)
  return {step: statistics.mean(values) for step, values in sorted(per_step.items())}


def gap_lines(curve: dict, final_gap, distill_curve=None) -> list:
  """Markdown: the gap over MPL, over the distill phase if any (columns `distill N`), then for the exported
  student (after finetuning)."""
  if not curve:
    return ["(no teacher-student curve: the MPL runs were trained with run.eval_every = 0)"]
  columns = {str(s): v for s, v in curve.items()}
  columns.update({f"distill {s}": v for s, v in (distill_curve or {}).items()})
  return ["Teacher minus student on held-out data during MPL (points, mean over seeds; `run.eval_every`), during "
          "the distill phase if any, and for the exported, finetuned student:", "",
          "| step | " + " | ".join(columns) + " | exported |",
          "| --- | " + " | ".join("---" for _ in columns) + " | --- |",
          "| gap | " + " | ".join(f"{v:+.1f}" for v in columns.values()) + f" | {statistics.mean(final_gap):+.1f} |"]


def table(results: dict) -> list:
  """Per method: the exported student, the student as the method's main phase left it (for MPL before the
  distill phase, `distill.steps`, when there is one), before finetuning, and the teacher."""
  lines = ["| method | student (exported) | student after its main phase | student before finetune | teacher "
           "| per seed (student) |", "| --- | --- | --- | --- | --- | --- |"]
  for method, runs in results.items():
    student = [r["student/accuracy"] for r in runs]
    before = [r.get("student/accuracy_before_finetune") for r in runs]
    main_phase = [r.get("student/accuracy_after_mpl", r.get("student/accuracy_before_finetune")) for r in runs]
    teacher = [r.get("teacher/accuracy") for r in runs]
    cells = " | ".join(run_lib.mean_std(v) for v in (student, main_phase, before, teacher))
    lines.append(f"| {method} | {cells} | {', '.join(f'{100 * v:.1f}' for v in student)} |")
  return lines


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(1.6 * len(results) + 2, 4))
  for i, (method, runs) in enumerate(results.items()):
    for offset, key, colour in ((-0.15, "student/accuracy", "tab:blue"), (0.15, "teacher/accuracy", "tab:orange")):
      values = [100 * r[key] for r in runs if key in r]
      if values:
        ax.scatter([i + offset] * len(values), values, s=16, color=colour, alpha=0.7,
                   label=key.split("/")[0] if i == len(results) - 1 or method == "mpl" else None)
        ax.hlines(statistics.mean(values), i + offset - 0.12, i + offset + 0.12, color=colour)
  ax.set_xticks(range(len(results)))
  ax.set_xticklabels(list(results))
  ax.set_ylabel("test accuracy (%)")
  ax.grid(axis="y", alpha=0.3)
  handles, labels = ax.get_legend_handles_labels()
  ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys())
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  unknown = set(FLAGS.methods) - set(BASELINES) - {"mpl", "reduced_mpl"}
  if unknown or "mpl" not in FLAGS.methods or not set(FLAGS.methods) & set(BASELINES):
    raise SystemExit(f"--methods must include mpl and at least one of {', '.join(BASELINES)} "
                     f"(optionally reduced_mpl){'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
  results = {}
  for seed in FLAGS.seeds:  # seeds outside: an interrupted comparison has every method on the same seeds
    for method in FLAGS.methods:
      results.setdefault(method, []).append(run_one(method, seed))
  student = lambda method: [100 * r["student/accuracy"] for r in results[method]]
  diffs = {m: [a - b for a, b in zip(student("mpl"), student(m))] for m in FLAGS.methods if m in BASELINES}
  variants = []
  if "reduced_mpl" in results:
    variants.append(run_lib.paired_row("reduced_mpl - mpl",
                                       [a - b for a, b in zip(student("reduced_mpl"), student("mpl"))]))
  gap = [100 * (r["student/accuracy"] - r["teacher/accuracy"]) for r in results["mpl"]]  # student - teacher
  mpl_dirs = [os.path.join(FLAGS.workroot, f"mpl.seed{seed}") for seed in FLAGS.seeds]
  curve, distill_curve = gap_curve(mpl_dirs), gap_curve(mpl_dirs, phase="distill")
  command = (f"python tools/compare.py --gin_file={FLAGS.gin_file} --methods={','.join(FLAGS.methods)} "
             f"--seeds={','.join(FLAGS.seeds)} --steps={FLAGS.steps} --out={FLAGS.out}"
             + "".join(f" --gin_bindings=\"{b}\"" for b in FLAGS.gin_bindings))
  lines = [f"Command: `{command}`", "", "Test accuracy (%), mean +- std over seeds:", "", *table(results), "",
           "MPL's exported student minus each baseline, and minus its own teacher, paired by seed (points):", "",
           "| comparison | mean | std | paired t | seeds better / equal / worse |", "| --- | --- | --- | --- | --- |",
           *[run_lib.paired_row(f"mpl - {m}", d) for m, d in diffs.items()],
           run_lib.paired_row("mpl student - mpl teacher", gap), *variants, "",
           *gap_lines(curve, [-g for g in gap], distill_curve), "", verdict(diffs)]
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
    json.dump(dict(command=command, results=results, teacher_minus_student=curve,
                   teacher_minus_student_distill=distill_curve), f, indent=2, sort_keys=True)
  plot(results, os.path.splitext(FLAGS.out)[0] + ".png")
  print("\n".join(lines))


if __name__ == "__main__":
  define_flags()
  app.run(main)
