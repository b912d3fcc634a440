"""Digits ablations of Meta Pseudo Labels: does the teacher's feedback help? Writes a table, its JSON and a plot
(studies/ablations/README.md and RESULTS.md discuss them).

  python studies/ablations/ablations.py --seeds=0,1,2,3,4 --out=studies/ablations/ablations.md \\
      --workroot=runs/ablations

Every configuration trains on scikit-learn digits with 5 labels a class and 200 validation images (20 a class)
held out of the unlabeled pool, from `gin/digits.gin` (small CNN, SGD Nesterov, cosine) with `run.steps`
set by --steps for all methods alike. Each run's student is scored on the 500 test images before and after
the finetuning phase; the "selected" column takes, per seed, whichever of the two has the higher *validation*
accuracy (ties: finetuned), so nothing is chosen on the test set. The feedback is isolated by running the same
MPL configuration with `mpl_weight` 1 (the method), 0 (h switched off: the teacher learns from labels (and
UDA) only, its labels still train the student) and -1 (the sign flipped, as in the popular ports), on the same
seeds, so the paired per-seed difference is reported alongside the means.

Runs are resumable and cached per (configuration, seed) under --workroot (`mpl_tf.runs.train`).
"""
import json
import os
import statistics
import sys

from absl import app
from absl import flags

# The repository root (two levels up), so that `mpl_tf` imports without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from mpl_tf import runs as run_lib  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "values for run.seed (data split and initialisation)")
flags.DEFINE_list("configs", None, "configurations to run (default: all of CONFIGS, in order)")
flags.DEFINE_integer("steps", 1500, "training steps of every method's main phase (and of Pseudo Labels' and "
                     "Reduced MPL's teacher phase)")
flags.DEFINE_integer("num_validation", 200, "validation images held out of digits' unlabeled pool")
flags.DEFINE_string("workroot", "runs/ablations", "parent of the per-run work directories")
flags.DEFINE_string("out", "studies/ablations/ablations.md",
                    "markdown table to write (and its .json beside it); RESULTS.md quotes it")
flags.DEFINE_string("plot", "studies/ablations/ablations.png", "plot to write")

# The feedback these studies were run with (the digits recipe's default until rule D1 of issue 26 switched it to the
# cosine at weight 0.1), written out so that each configuration keeps meaning what its cached runs measured.
_MPL_METHOD = "run.method = 'mpl'"
_FULL_WEIGHT = "MetaPseudoLabelsModel.mpl_weight = 1.0"
_MPL = (_MPL_METHOD, "MetaPseudoLabelsModel.feedback = 'label_effect'", _FULL_WEIGHT)
_NO_UDA = "uda.weight = 0.0"


def _feedback(form: str, reduction: str, batch_norm: str = "train"):
  """Bindings of one feedback variant (docs/feedback.md), written out so cached runs never follow a default."""
  return [_MPL_METHOD, _FULL_WEIGHT, f"MetaPseudoLabelsModel.feedback = '{form}'",
          f"MetaPseudoLabelsModel.mpl_reduction = '{reduction}'",
          f"MetaPseudoLabelsModel.feedback_batch_norm = '{batch_norm}'"]
# name -> (gin file, bindings, description). The MPL rows without UDA isolate the feedback best: there the
# teacher learns from 50 labels plus the student's feedback and nothing else.
CONFIGS = {
    "supervised": ("gin/digits.gin", ["run.method = 'supervised'"], "student on the 50 labels only"),
    "pseudo_labels": ("gin/digits.gin", ["run.method = 'pseudo_labels'"],
                      "frozen supervised teacher's sampled labels"),
    "uda": ("gin/digits.gin", ["run.method = 'uda'"], "UDA (supervised + consistency), one network"),
    "mpl_sample": ("gin/digits.gin", [*_MPL, _NO_UDA], "MPL, sampled hard labels"),
    "mpl_argmax": ("gin/digits.gin", [*_MPL, _NO_UDA, "MetaPseudoLabelsModel.pseudo_labels = 'argmax'"],
                   "MPL, argmax hard labels"),
    "mpl_soft": ("gin/digits.gin", [*_MPL, _NO_UDA, "MetaPseudoLabelsModel.pseudo_labels = 'soft'"],
                 "MPL, soft labels, exact meta-gradient"),
    "mpl_sample_h0": ("gin/digits.gin", [*_MPL, _NO_UDA, "MetaPseudoLabelsModel.mpl_weight = 0.0"],
                      "ablation: MPL sample with the feedback off (h = 0)"),
    "mpl_sample_flipped": ("gin/digits.gin", [*_MPL, _NO_UDA, "MetaPseudoLabelsModel.mpl_weight = -1.0"],
                           "ablation: MPL sample with the sign of h flipped (popular ports)"),
    "mpl_uda": ("gin/digits.gin", [*_MPL], "MPL + the teacher's UDA (the paper's configuration)"),
    "mpl_uda_h0": ("gin/digits.gin", [*_MPL, "MetaPseudoLabelsModel.mpl_weight = 0.0"],
                   "ablation: MPL + UDA with the feedback off"),
    "mpl_uda_flipped": ("gin/digits.gin", [*_MPL, "MetaPseudoLabelsModel.mpl_weight = -1.0"],
                        "ablation: MPL + UDA with the sign of h flipped"),
    "reduced_mpl": ("gin/digits_reduced_mpl.gin", ["run.method = 'reduced_mpl'"],
                    "Reduced MPL (Appendix E): UDA big teacher, MLP reduced teacher"),
    # The feedback study (RESULTS.md): MPL + UDA, h as the paper's loss difference or the label effect, the
    # hard-label term averaged or summed over the unlabeled batch; the control is mpl_uda_h0.
    "mpl_uda_ld_mean": ("gin/digits.gin", _feedback("loss_difference", "mean"),
                        "MPL + UDA, h = L(theta) - L(theta') (paper), mean over the unlabeled batch"),
    "mpl_uda_ld_sum": ("gin/digits.gin", _feedback("loss_difference", "sum"),
                       "MPL + UDA, h = L(theta) - L(theta'), summed over the unlabeled batch"),
    "mpl_uda_le_mean": ("gin/digits.gin", _feedback("label_effect", "mean"),
                        "MPL + UDA, h = L(theta + D0) - L(theta') (label effect), mean"),
    "mpl_uda_le_sum": ("gin/digits.gin", _feedback("label_effect", "sum"),
                       "MPL + UDA, h = L(theta + D0) - L(theta') (label effect), summed"),
    "mpl_uda_le_mean_inference": ("gin/digits.gin", _feedback("label_effect", "mean", "inference"),
                                  "MPL + UDA, label effect, mean, h measured with batch norm in inference mode"),
    "mpl_uda_le_sum_inference": ("gin/digits.gin", _feedback("label_effect", "sum", "inference"),
                                 "MPL + UDA, label effect, summed, h measured with batch norm in inference mode"),
    # Why the student trails its teacher (issue: own data): where its labels come from, their mode, finetuning.
    "mpl_uda_labels_weak": ("gin/digits.gin", _feedback("label_effect", "mean")
                            + ["MetaPseudoLabelsModel.pseudo_label_view = 'weak'"],
                            "MPL + UDA (default feedback), student's labels from the teacher's weak view"),
    "mpl_uda_labels_weak_argmax": ("gin/digits.gin", _feedback("label_effect", "mean")
                                   + ["MetaPseudoLabelsModel.pseudo_label_view = 'weak'",
                                      "MetaPseudoLabelsModel.pseudo_labels = 'argmax'"],
                                   "MPL + UDA, argmax labels from the teacher's weak view"),
    "mpl_uda_finetune_long": ("gin/digits.gin", _feedback("label_effect", "mean")
                              + ["run.finetune_steps = 1000", "finetune/optimizer.learning_rate = 0.01"],
                              "MPL + UDA, finetuning 1,000 steps at lr 0.01 (default: 200 at 1e-3)"),
    # Issue 26, experiments that give the feedback its best chance (studies/attribution/README.md). The
    # decision rules were written here before any of these runs was read: within each group, the configuration
    # with the highest mean validation accuracy over the seeds (`chosen_on_validation`; ties: the one listed
    # first), then its test figure paired by seed against its feedback-off control.
    # (a) h = cosine of the two student gradients (the paper's appendix), MPL + UDA, weight chosen on validation;
    #     the control is mpl_uda_h0 (with the weight 0 the form of h changes nothing).
    **{f"mpl_uda_cos_w{w}": ("gin/digits.gin", _feedback("cosine", "mean") + [f"MetaPseudoLabelsModel.mpl_weight = {w}"],
                             f"MPL + UDA, h = cosine of the two gradients, MPL term x{w}") for w in ("0.1", "1", "10")},
    # (b) soft labels from softmax(T / tau) (exact meta-gradient) at the paper's 7 unlabeled images a labeled one,
    #     tau chosen on validation; each tau has its feedback-off twin (tau also changes the student's targets).
    **{f"mpl_uda_soft7_t{t}{off}": ("gin/digits.gin", [
        *_MPL, "MetaPseudoLabelsModel.pseudo_labels = 'soft'", "build_dataset.uda_ratio = 7",
        f"MetaPseudoLabelsModel.label_temperature = {t}", f"MetaPseudoLabelsModel.mpl_weight = {1.0 if not off else 0.0}"],
        f"MPL + UDA, soft labels at temperature {t}, 7x unlabeled{', feedback off' if off else ''}")
       for t in ("0.5", "1", "2") for off in ("", "_h0")},
}
# (method, its feedback-off and flipped twins) for the paired differences.
PAIRS = (("mpl_sample", "mpl_sample_h0", "mpl_sample_flipped"), ("mpl_uda", "mpl_uda_h0", "mpl_uda_flipped"),
         ("mpl_uda_ld_mean", "mpl_uda_h0"), ("mpl_uda_ld_sum", "mpl_uda_h0"), ("mpl_uda_le_mean", "mpl_uda_h0"),
         ("mpl_uda_le_sum", "mpl_uda_h0"), ("mpl_uda_le_mean_inference", "mpl_uda_h0"),
         ("mpl_uda_le_sum_inference", "mpl_uda_h0"),
         # the student-gap study: where the student's labels come from, their mode, the finetuning budget
         ("mpl_uda_labels_weak", "mpl_uda_le_mean"), ("mpl_uda_labels_weak_argmax", "mpl_uda_labels_weak"),
         ("mpl_uda_finetune_long", "mpl_uda_le_mean"),
         *((f"mpl_uda_cos_w{w}", "mpl_uda_h0") for w in ("0.1", "1", "10")),
         *((f"mpl_uda_soft7_t{t}", f"mpl_uda_soft7_t{t}_h0") for t in ("0.5", "1", "2")))
# Groups of variants among which validation accuracy chooses (`chosen_on_validation`).
GROUPS = (("mpl_sample", "mpl_argmax", "mpl_soft"),
          ("mpl_uda_ld_mean", "mpl_uda_ld_sum", "mpl_uda_le_mean", "mpl_uda_le_sum"),
          ("mpl_uda_le_mean", "mpl_uda_le_mean_inference"), ("mpl_uda_le_sum", "mpl_uda_le_sum_inference"),
          ("mpl_uda_le_mean", "mpl_uda_labels_weak", "mpl_uda_labels_weak_argmax", "mpl_uda_finetune_long"),
          ("mpl_uda_cos_w0.1", "mpl_uda_cos_w1", "mpl_uda_cos_w10"),
          # issue 26, item 4 (studies/attribution/decision_rules.md): the default first, so a tie keeps it
          ("mpl_uda_le_mean", "mpl_uda_cos_w0.1", "mpl_uda_cos_w1", "mpl_uda_cos_w10"),
          ("mpl_uda_soft7_t1", "mpl_uda_soft7_t0.5", "mpl_uda_soft7_t2"))


def run_config(name: str, seed: str) -> dict:
  gin_file, bindings, _ = CONFIGS[name]
  common = [f"run.seed = {seed}", f"STEPS = {FLAGS.steps}", f"build_dataset.num_validation = {FLAGS.num_validation}"]
  return run_lib.train(gin_file, os.path.join(FLAGS.workroot, f"{name}.seed{seed}"), bindings + common)


def scores(metrics: dict) -> dict:
  """Test accuracy without and with finetuning, and the one of the two chosen on validation."""
  after = metrics["student/accuracy"]
  before = metrics.get("student/accuracy_before_finetune", after)
  val_after = metrics.get("validation/student/accuracy")
  val_before = metrics.get("validation/student/accuracy_before_finetune", val_after)
  if val_after is None:
    raise ValueError("the run holds no validation split out: set build_dataset.num_validation")
  return dict(before=before, after=after, selected=after if val_after >= val_before else before,
              finetune_chosen=val_after >= val_before, validation=max(val_after, val_before),
              teacher=metrics.get("teacher/accuracy"))


def table(results: dict) -> list:
  lines = ["| configuration | no finetune | finetuned | selected on validation | teacher | per seed (selected) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, runs in results.items():
    s = [scores(m) for m in runs]
    per_seed = ", ".join(f"{100 * x['selected']:.1f}" for x in s)
    cells = " | ".join(run_lib.mean_std([x[key] for x in s]) for key in ("before", "after", "selected", "teacher"))
    lines.append(f"| {name} | {cells} | {per_seed} |")
  return lines


def paired(results: dict) -> list:
  """Per-seed differences of the method minus each ablation (selected accuracy, percentage points)."""
  lines = ["| comparison | mean difference (pp) | std | paired t | seeds better / equal / worse |",
           "| --- | --- | --- | --- | --- |"]
  lines += [run_lib.paired_row(label, diffs) for label, diffs in paired_differences(results).items()]
  return lines


def teacher_gap(results: dict) -> list:
  """Teacher minus the exported (finetuned) student, per configuration with a teacher, in points."""
  lines = ["| configuration | teacher - exported student (mean +- std) | per seed |", "| --- | --- | --- |"]
  for name, runs in results.items():
    gaps = [scores(m)["teacher"] - scores(m)["after"] for m in runs if scores(m)["teacher"] is not None]
    if gaps:
      lines.append(f"| {name} | {run_lib.mean_std(gaps)} | {', '.join(f'{100 * g:+.1f}' for g in gaps)} |")
  return lines


def chosen_on_validation(results: dict, groups=GROUPS) -> list:
  """For each group of variants, the one with the best mean validation accuracy, and its test accuracy."""
  lines = []
  for group in groups:
    present = [name for name in group if name in results]
    if len(present) < 2:
      continue
    val = {name: statistics.mean(scores(m)["validation"] for m in results[name]) for name in present}
    best = max(present, key=val.get)
    lines.append(f"- among {', '.join(present)}: validation means "
                 + ", ".join(f"{name} {100 * v:.2f}" for name, v in val.items())
                 + f" -> `{best}`, test {run_lib.mean_std([scores(m)['selected'] for m in results[best]])}")
  return lines


def paired_differences(results: dict) -> dict:
  """'method - ablation' -> per-seed differences of the selected test accuracy, in percentage points."""
  out = {}
  for method, *ablations in PAIRS:
    for other in ablations:
      if method in results and other in results:
        out[f"{method} - {other}"] = [100 * (scores(a)["selected"] - scores(b)["selected"])
                                      for a, b in zip(results[method], results[other])]
  return out


def feedback_scale(workdir: str, after_step: int) -> dict:
  """How large the feedback was in one MPL run, from its TensorBoard scalars (means over summary windows).

  Returns the median over windows after `after_step` of |h| and of |teacher/mpl_loss| / teacher/supervised_loss
  (the MPL term is (h - b) * CE(y_hat, T(x_u)), so this ratio is about |h - b| times the ratio of the two
  cross-entropies: the weight of the feedback in the teacher's update).
  """
  values = {tag: {step: v for step, v in by_step.items() if step > after_step}
            for tag, by_step in run_lib.scalars(workdir, "mpl").items()}
  h, mpl, sup = (values.get(k, {}) for k in ("mpl/h", "teacher/mpl_loss", "teacher/supervised_loss"))
  steps = sorted(set(h) & set(mpl) & set(sup))
  if not steps:
    return {}
  return dict(h=statistics.median(abs(h[s]) for s in steps),
              mpl_over_supervised=statistics.median(abs(mpl[s]) / max(sup[s], 1e-12) for s in steps))


def mpl_weight(name: str) -> float:
  """The weight of the MPL term a configuration binds (the last binding wins, as in gin; 1 when it binds none)."""
  prefix = "MetaPseudoLabelsModel.mpl_weight = "
  return ([1.0] + [float(b[len(prefix):]) for b in CONFIGS[name][1] if b.startswith(prefix)])[-1]


def feedback_table(names, after_step: int) -> list:
  """|h| and the weighted MPL term over the teacher's supervised term (the logged term times `mpl_weight`)."""
  lines = ["| configuration | median windowed abs(h) | median abs(weighted MPL term) / supervised term | seeds |",
           "| --- | --- | --- | --- |"]
  for name in names:
    rows = [feedback_scale(os.path.join(FLAGS.workroot, f"{name}.seed{seed}"), after_step) for seed in FLAGS.seeds]
    rows = [r for r in rows if r]
    if rows:
      ratio = abs(mpl_weight(name)) * statistics.median(r["mpl_over_supervised"] for r in rows)
      lines.append(f"| {name} | {statistics.median(r['h'] for r in rows):.1e} | {ratio:.1e} | {len(rows)} |")
  return lines


def plot(results: dict, path: str) -> None:
  """Left: every configuration's test accuracy per seed, without and with finetuning. Right: the paired
  per-seed effect of the feedback (method minus its feedback-off and flipped-sign twins)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = list(results)
  diffs = paired_differences(results)
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(1.0 * len(names) + 2 + 0.8 * len(diffs) + 2, 4.8),
                               gridspec_kw={"width_ratios": [max(len(names), 1), max(len(diffs), 1) + 1]})
  for i, name in enumerate(names):
    s = [scores(m) for m in results[name]]
    for offset, key, colour in ((-0.15, "before", "tab:gray"), (0.15, "after", "tab:blue")):
      values = [100 * x[key] for x in s]
      ax.scatter([i + offset] * len(values), values, s=14, color=colour, alpha=0.7,
                 label={"before": "no finetune", "after": "finetuned"}[key] if i == 0 else None)
      ax.hlines(statistics.mean(values), i + offset - 0.12, i + offset + 0.12, color=colour)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=35, ha="right")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"digits, 5 labels a class, {len(FLAGS.seeds)} seeds (dots: seeds; bars: means)")
  ax.grid(axis="y", alpha=0.3)
  ax.legend()
  for i, (label, values) in enumerate(diffs.items()):
    bx.scatter([i] * len(values), values, s=16, color="tab:red", alpha=0.7)
    bx.hlines(statistics.mean(values), i - 0.2, i + 0.2, color="tab:red")
  bx.axhline(0.0, color="black", linewidth=0.8)
  bx.set_xticks(range(len(diffs)))
  bx.set_xticklabels(list(diffs), rotation=35, ha="right")
  bx.set_ylabel("difference, selected test accuracy (pp)")
  bx.set_title("effect of the feedback, paired by seed")
  bx.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  names = FLAGS.configs or list(CONFIGS)
  unknown = sorted(set(names) - set(CONFIGS))
  if unknown:
    raise ValueError(f"unknown configurations {unknown}; known: {', '.join(CONFIGS)}")
  runs = {name: {} for name in names}
  for seed in FLAGS.seeds:  # seeds outside: an interrupted sweep still has every configuration on the same seeds
    for name in names:
      runs[name][seed] = run_config(name, seed)
  results = {name: [runs[name][s] for s in FLAGS.seeds] for name in names}
  command = (f"{run_lib.thread_prefix()}python studies/ablations/ablations.py --seeds={','.join(FLAGS.seeds)} "
             f"--steps={FLAGS.steps} --num_validation={FLAGS.num_validation} --configs={','.join(names)} "
             f"--workroot={FLAGS.workroot} --out={FLAGS.out} --plot={FLAGS.plot}")
  lines = [f"Command: `{command}`", "", *table(results), "", "Paired per-seed differences (selected):", "",
           *paired(results), "", "The student's gap to its own teacher (test):", "", *teacher_gap(results), "",
           "Chosen on validation:", "", *chosen_on_validation(results), "",
           "Size of the feedback in the teacher's update (TensorBoard windows of 50 steps, after the student's "
           "wait):", "", *feedback_table([n for n in names if n.startswith("mpl") and not n.endswith("_h0")],
                                         after_step=200), "",
           "Configurations:", ""]
  lines += [f"- `{name}`: {CONFIGS[name][2]}" for name in names]
  print("\n".join(lines))
  with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
    json.dump(dict(command=command, results=results), f, indent=2, sort_keys=True)
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(lines) + "\n")
  plot(results, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
