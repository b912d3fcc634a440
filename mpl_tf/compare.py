"""Does MPL help on *your* data, and which part of it? Arms that separate the parts, over a few seeds: one table,
one plot, a verdict that names each part against its own control.

  mpl-compare --gin_bindings="build_dataset.path = 'my.npz'" --out=runs/compare/mine.md
  (or python -m mpl_tf.compare ...)

Every arm trains with the same gin recipe (default `gin/own_data.gin`: the own-data augmentation defaults, small
CNN with strides from the image size, MPL's distill phase of 2,000 steps), the same data, seeds and --steps, each
run in its own cached work directory under --workroot (an interrupted comparison resumes). The arms (`ARMS`):

  supervised        labeled data only
  uda               one network, supervised + UDA consistency (MPL's teacher's losses, no student)
  uda_distill       uda, then the same distill phase MPL gets (the UDA network, frozen, teaches itself)
  mpl_feedback_off  MPL with the teacher's MPL term off (`mpl_weight = 0`): a UDA teacher whose student learns only
                    from its pseudo labels, then the distill phase
  mpl               MPL, then the distill phase
  (optional: pseudo_labels, reduced_mpl)

The table gives each arm's test accuracy: the exported student (after finetuning), the student after the arm's
main phase (before any distill phase), before finetuning, and the teacher. Then each part of MPL against its own
control, paired by seed (`PARTS`): the feedback (mpl - mpl_feedback_off), the distill phase (uda_distill - uda),
MPL's student-of-a-teacher main phase (mpl_feedback_off - uda_distill, or - uda without a distill phase), and
MPL against the best baseline that ran (the same extra phase included). A part "helped" when it is better on every
seed with a paired t above 2 (at least 3 seeds), "hurt" in the mirror image, else "no measurable difference".
A few seeds on a small budget answer "is something badly wrong", not "by how much": for a claim, use more seeds.
"""
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

from absl import app
from absl import flags

from mpl_tf import console, usage
from mpl_tf import runs as run_lib

FLAGS = flags.FLAGS
REDUCED_MPL_GIN = "gin/algorithms/reduced_mpl.gin"
WHOLE = "MPL as a whole, against the best baseline"  # the last contrast: not a part, never in "What helped"


@dataclasses.dataclass(frozen=True)
class Arm:
  method: str  # run.method
  bindings: Tuple[str, ...] = ()
  baseline: bool = True  # a method MPL is compared against (not an MPL variant)


ARMS = {
    "supervised": Arm("supervised"),
    "uda": Arm("uda"),
    "uda_distill": Arm("uda_distill"),
    "pseudo_labels": Arm("pseudo_labels"),
    "mpl_feedback_off": Arm("mpl", ("MetaPseudoLabelsModel.mpl_weight = 0.0",), baseline=False),
    "mpl": Arm("mpl", baseline=False),
    "reduced_mpl": Arm("reduced_mpl", (f"include '{REDUCED_MPL_GIN}'",), baseline=False),
}
DEFAULT_ARMS = ["supervised", "uda", "uda_distill", "mpl_feedback_off", "mpl"]

# (arm, its control, the part of MPL the difference measures); a part is reported when both arms ran, the first
# control that ran is used.
PARTS = [
    ("mpl", ("mpl_feedback_off",), "the teacher's feedback (MPL's term)"),
    ("uda_distill", ("uda",), "the distill phase"),
    ("mpl_feedback_off", ("uda_distill", "uda"), "a student learning only from a UDA teacher's labels, instead of "
                                                "the UDA network itself"),
]


def define_flags():
  """Defined only when run as a script, so that tests can import the module beside other tools' flags."""
  flags.DEFINE_multi_string("gin_file", ["gin/own_data.gin"], "recipe(s) shared by every arm; later ones "
                            "override (e.g. --gin_file=gin/own_data.gin --gin_file=gin/smoke.gin for a quick look)")
  flags.DEFINE_multi_string("gin_bindings", [], "bindings for every run: at least the data, e.g. "
                            "\"build_dataset.path = 'my.npz'\"")
  flags.DEFINE_list("methods", DEFAULT_ARMS, f"arms to compare, among {', '.join(ARMS)} (module doc); must include "
                    "mpl and one baseline. uda_distill and the distill phase of mpl need distill.steps > 0 (the "
                    "default recipe has 2000)")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "values for run.seed")
  flags.DEFINE_integer("steps", 1500, "training steps of every arm's main phase (a small budget)")
  flags.DEFINE_string("workroot", "runs/compare", "parent of the per-run work directories")
  flags.DEFINE_string("out", "runs/compare/compare.md", "markdown file to write (its .json and .png beside it)")


def run_one(arm: str, seed: str) -> dict:
  spec = ARMS[arm]
  bindings = list(spec.bindings) + [f"run.method = '{spec.method}'", f"run.seed = {seed}", f"STEPS = {FLAGS.steps}"]
  bindings += FLAGS.gin_bindings
  return run_lib.train(FLAGS.gin_file, os.path.join(FLAGS.workroot, f"{arm}.seed{seed}"), bindings)


def classify(diffs: List[float]) -> str:
  """'helped', 'hurt' or 'no measurable difference' for per-seed differences in points (module doc's rule)."""
  p, n = run_lib.paired_stats(diffs), len(diffs)
  if n >= 3 and p["better"] == n and p["t"] > 2:
    return "helped"
  if n >= 3 and p["worse"] == n and p["t"] < -2:
    return "hurt"
  return "no measurable difference"


def _figure(diffs: List[float], control: str) -> str:
  p = run_lib.paired_stats(diffs)
  return f"{p['mean']:+.2f} +- {p['std']:.2f} points against {control}, better on {p['better']} of {len(diffs)} seeds"


def contrasts(students: Dict[str, List[float]]) -> List[Tuple[str, str, str, List[float]]]:
  """(arm, control, part, per-seed differences) for each part of MPL whose arm and control ran; last, MPL against
  the best baseline (largest mean accuracy). `students`: arm -> exported student accuracy per seed (points)."""
  out = []
  for arm, controls, part in PARTS:
    control = next((c for c in controls if c in students), None)
    if arm in students and control:
      out.append((arm, control, part, [a - b for a, b in zip(students[arm], students[control])]))
  baselines = [a for a in students if ARMS[a].baseline]
  if "mpl" in students and baselines:
    best = max(baselines, key=lambda a: statistics.mean(students[a]))
    out.append(("mpl", best, WHOLE,
                [a - b for a, b in zip(students["mpl"], students[best])]))
  return out


# The report's table of each part of MPL against its own control (`parts_rows`), paired by seed.
PARTS_HEADER = ("| comparison | mean | std | paired t | seeds better / equal / worse |", "| --- | --- | --- | --- | --- |")


def students_of(results: dict) -> Dict[str, List[float]]:
  """arm -> the exported student's test accuracy per seed, in points."""
  return {arm: [100 * r["student/accuracy"] for r in runs] for arm, runs in results.items()}


def parts_rows(students: Dict[str, List[float]]) -> List[str]:
  """One `runs.paired_row` per contrast (`contrasts`), and Reduced MPL against MPL when both ran."""
  rows = [run_lib.paired_row(f"{arm} - {control} ({part})", diffs)
          for arm, control, part, diffs in contrasts(students)]
  if "reduced_mpl" in students and "mpl" in students:
    rows.append(run_lib.paired_row("reduced_mpl - mpl", [a - b for a, b in zip(students["reduced_mpl"],
                                                                               students["mpl"])]))
  return rows


def verdict(students: Dict[str, List[float]]) -> str:
  """The plain sentences: each part of MPL against its own control, then MPL against the best baseline."""
  parts = [(arm, control, part, diffs, classify(diffs)) for arm, control, part, diffs in contrasts(students)]
  sentences = [f"{part[0].upper() + part[1:]}: {outcome} ({arm} {_figure(diffs, control)})."
               for arm, control, part, diffs, outcome in parts]
  helped = [part for _, _, part, _, outcome in parts if outcome == "helped" and part != WHOLE]
  lead = ("What helped: " + "; ".join(helped) + "." if helped else
          "No part of MPL helped measurably against its own control.")
  return " ".join([lead] + sentences)


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
  """Markdown: the gap over MPL, over the distill phase if any (columns `N (distill)`), then for the exported
  student (after finetuning). Steps count across phases, as TensorBoard shows them: with 1,500 MPL steps the
  distill phase's step 250 is column `1750 (distill)`."""
  if not curve:
    return ["(no teacher-student curve: the MPL runs were trained with run.eval_every = 0)"]
  columns = {str(s): v for s, v in curve.items()}
  columns.update({f"{s} (distill)": v for s, v in (distill_curve or {}).items()})
  return ["Teacher minus student on held-out data during MPL (points, mean over seeds; `run.eval_every`), during "
          "the distill phase if any (steps counted across phases), and for the exported, finetuned student:", "",
          "| step | " + " | ".join(columns) + " | exported |",
          "| --- | " + " | ".join("---" for _ in columns) + " | --- |",
          "| gap | " + " | ".join(f"{v:+.1f}" for v in columns.values()) + f" | {statistics.mean(final_gap):+.1f} |"]


def table(results: dict) -> list:
  """Per arm: the exported student, the student as the arm's main phase left it (before the distill phase, when
  there is one), before finetuning, and the teacher (uda_distill's is the UDA network after its main phase)."""
  lines = ["| arm | student (exported) | student after its main phase | student before finetune | teacher "
           "| per seed (student) |", "| --- | --- | --- | --- | --- | --- |"]
  for arm, runs in results.items():
    student = [r["student/accuracy"] for r in runs]
    before = [r.get("student/accuracy_before_finetune") for r in runs]
    main_phase = [r.get("student/accuracy_after_mpl", r.get("student/accuracy_before_finetune")) for r in runs]
    teacher = [r.get("teacher/accuracy") for r in runs]
    if ARMS[arm].method == "uda_distill":
      teacher = main_phase
    cells = " | ".join(run_lib.mean_std(v) for v in (student, main_phase, before, teacher))
    lines.append(f"| {arm} | {cells} | {', '.join(f'{100 * v:.1f}' for v in student)} |")
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
  unknown = set(FLAGS.methods) - set(ARMS)
  if unknown or "mpl" not in FLAGS.methods or not any(ARMS[a].baseline for a in FLAGS.methods if a in ARMS):
    raise ValueError(f"--methods must include mpl and at least one baseline among "
                     f"{', '.join(a for a, spec in ARMS.items() if spec.baseline)} (arms: {', '.join(ARMS)})"
                     f"{'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}")
  results = {}
  for seed in FLAGS.seeds:  # seeds outside: an interrupted comparison has every arm on the same seeds
    for arm in FLAGS.methods:
      try:
        results.setdefault(arm, []).append(run_one(arm, seed))
      except subprocess.CalledProcessError as e:
        raise SystemExit(f"mpl-compare: arm {arm}, seed {seed} stopped (exit status {e.returncode}; its message is "
                         f"above); finished arms are kept: rerun the same command to resume") from None
  students = students_of(results)
  gap = [100 * (r["student/accuracy"] - r["teacher/accuracy"]) for r in results["mpl"]]  # student - teacher
  mpl_dirs = [os.path.join(FLAGS.workroot, f"mpl.seed{seed}") for seed in FLAGS.seeds]
  curve, distill_curve = gap_curve(mpl_dirs), gap_curve(mpl_dirs, phase="distill")
  program = ["mpl-compare"] if os.path.basename(sys.argv[0]) == "mpl-compare" else ["python", "-m", "mpl_tf.compare"]
  command = run_lib.thread_prefix() + console.shell_join([*program, *(f"--gin_file={g}" for g in FLAGS.gin_file),
                        f"--methods={','.join(FLAGS.methods)}", f"--seeds={','.join(FLAGS.seeds)}",
                        f"--steps={FLAGS.steps}", f"--workroot={FLAGS.workroot}", f"--out={FLAGS.out}",
                        *(f"--gin_bindings={b}" for b in FLAGS.gin_bindings)])
  lines = [f"Command: `{command}`", "", "Test accuracy (%), mean +- std over seeds:", "", *table(results), "",
           "Each part of MPL against its own control, and MPL's student against its own teacher, paired by seed "
           "(exported students, points):", "",
           *PARTS_HEADER, *parts_rows(students), run_lib.paired_row("mpl student - mpl teacher", gap), "",
           *gap_lines(curve, [-g for g in gap], distill_curve), "", verdict(students)]
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
    json.dump(dict(command=command, results=results, teacher_minus_student=curve,
                   teacher_minus_student_distill=distill_curve), f, indent=2, sort_keys=True)
  plot(results, os.path.splitext(FLAGS.out)[0] + ".png")
  print("\n".join(lines))


def run():
  """Console script `mpl-compare` (and `python -m mpl_tf.compare`): flags defined here, not at import, so that
  tests import the module beside the other entry points' flags."""
  define_flags()
  usage.exit_on_help("__main__", "mpl-compare", __doc__, ["gin_file", "gin_bindings", "methods", "seeds", "steps",
                                                          "workroot", "out"],
                     more="Each arm is one `mpl-train` run (flags and gin as there: mpl-train --help).")
  with console.loading_tensorflow():
    from mpl_tf import cli  # pylint: disable=import-outside-toplevel
  app.run(cli.reports_errors("mpl-compare")(main))


if __name__ == "__main__":
  run()
