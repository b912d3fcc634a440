"""The paper's TwoMoon experiment (section 3.1, Figure 2) over seeds: table, figure and the numbers as JSON.

Runs, in this process and one after the other, each method of `--methods` for `--seeds` seeds through
`mpl_tf.experiment.run` (the very code `python -m mpl_tf.train` runs), configured by `--gin_file`
(default gin/two_moons.gin) plus per-method gin bindings:

  supervised      the student on the 6 labeled points only
  pseudo_labels   a supervised teacher, frozen, labels the unlabeled points for the student
  mpl             Meta Pseudo Labels
  mpl_off         the same MPL run with the feedback switched off (`MetaPseudoLabelsModel.mpl_weight = 0.0`):
                  the honest control; whatever MPL gains over it is what the student's feedback does
  mpl_argmax, mpl_soft, mpl_x100, mpl_nosup*, mpl_uda, mpl_uda_off, oracle: variants (see VARIANTS; the
                  control of mpl_x100 is mpl_off)

and writes to `--out`:
  two_moons.md    a summary table (mean, std, seeds >= 0.95, for student and teacher accuracy) and a
                  per-seed table; when the file exists, only the part between the tool's markers is replaced,
                  so a study written around it survives a re-run
  two_moons.png   the decision boundaries of the students of Supervised, Pseudo Labels and MPL for one seed,
                  side by side with the labeled points marked, like the paper's Figure 2
  two_moons.json  every number, plus the command line, gin bindings and runtimes
With `--diagnose=mpl,...` it also trains those methods once more on `--plot_seed` in chunks and records,
over training, the feedback h, the labeled loss, the norms of the teacher's supervised and MPL gradients
and what the teacher's sampled labels look like (`diagnostics` in the JSON, a table in the markdown).

Accuracy is the fraction of all 2,000 points classified correctly, as in the paper's figure.
Example: python studies/two_moons/two_moons.py --out=studies/two_moons   (the table in studies/two_moons/two_moons.md;
about 10-15 minutes on 2 cores)
"""
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Sequence

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import gin  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

_UDA = ["build_dataset.two_views = True", "build_dataset.noise_stddev = 0.2", "uda.weight = 1.0"]
_FORMS = {"ld": ("loss difference", "loss_difference"), "le": ("label effect", "label_effect")}
# The feedback study (studies/feedback_study/README.md, docs/feedback.md): h as the paper's loss difference or the label effect, the
# hard-label term averaged or summed over the unlabeled batch, with and without the teacher's UDA term; the
# controls are mpl_off and mpl_uda_off (CONTROLS). Every option is written out, never left to a default.
FEEDBACK_VARIANTS: Dict[str, tuple] = {
    f"mpl{'_uda' if uda else ''}_{form}_{reduction}": (
        f"MPL{' + UDA' if uda else ''}, {_FORMS[form][0]}, {reduction}",
        ["run.method = 'mpl'", f"MetaPseudoLabelsModel.feedback = '{_FORMS[form][1]}'",
         f"MetaPseudoLabelsModel.mpl_reduction = '{reduction}'"] + (_UDA if uda else []))
    for uda in (False, True) for form in _FORMS for reduction in ("mean", "sum")}
CONTROLS = {name: ("mpl_uda_off" if "_uda_" in name else "mpl_off") for name in FEEDBACK_VARIANTS}
CONTROLS.update(mpl="mpl_off", mpl_uda="mpl_uda_off", mpl_x100="mpl_off",
                mpl_uda_nosup_soft="mpl_uda_nosup_soft_off", mpl_uda_nosup_soft_x100="mpl_uda_nosup_soft_off")

# name -> (label for tables, gin bindings on top of the base file)
METHODS: Dict[str, tuple] = {
    "supervised": ("Supervised", ["run.method = 'supervised'"]),
    "pseudo_labels": ("Pseudo Labels", ["run.method = 'pseudo_labels'"]),
    "mpl": ("MPL", ["run.method = 'mpl'"]),
    "mpl_off": ("MPL, feedback off (mpl_weight = 0)",
                ["run.method = 'mpl'", "MetaPseudoLabelsModel.mpl_weight = 0.0"]),
}
VARIANTS: Dict[str, tuple] = {
    "mpl_argmax": ("MPL, argmax labels", ["run.method = 'mpl'", "MetaPseudoLabelsModel.pseudo_labels = 'argmax'"]),
    "mpl_soft": ("MPL, soft labels (exact meta-gradient)",
                 ["run.method = 'mpl'", "MetaPseudoLabelsModel.pseudo_labels = 'soft'"]),
    "mpl_x100": ("MPL, feedback x100", ["run.method = 'mpl'", "MetaPseudoLabelsModel.mpl_weight = 100.0"]),
    # Without the teacher's supervised term the teacher learns from the feedback alone: does h carry the labels?
    "mpl_nosup": ("MPL, teacher without supervised term",
                  ["run.method = 'mpl'", "MetaPseudoLabelsModel.teacher_supervised_weight = 0.0"]),
    "mpl_nosup_soft": ("MPL soft, teacher without supervised term", [
        "run.method = 'mpl'", "MetaPseudoLabelsModel.teacher_supervised_weight = 0.0",
        "MetaPseudoLabelsModel.pseudo_labels = 'soft'"]),
    "mpl_nosup_x100": ("MPL x100, teacher without supervised term", [
        "run.method = 'mpl'", "MetaPseudoLabelsModel.teacher_supervised_weight = 0.0",
        "MetaPseudoLabelsModel.mpl_weight = 100.0"]),
    # The teacher's UDA term: Gaussian input noise as the strong view (an earlier prototype of ours).
    "mpl_uda": ("MPL + teacher UDA (noise 0.2)", ["run.method = 'mpl'"] + _UDA),
    "mpl_uda_off": ("MPL + teacher UDA, feedback off",
                    ["run.method = 'mpl'", "MetaPseudoLabelsModel.mpl_weight = 0.0"] + _UDA),
    **FEEDBACK_VARIANTS,
    # The positive control (issue 26): the teacher has UDA's consistency term and no supervised term, so the
    # labels reach it only through the student's feedback; soft labels (the exact one-step meta-gradient). Both
    # weights are reported, none is chosen (TwoMoon holds no validation split out); the control has the feedback
    # off, i.e. a teacher with no label signal at all.
    **{f"mpl_uda_nosup_soft{suffix}": (f"MPL + teacher UDA, no supervised term, soft labels, feedback x{weight:g}", [
        "run.method = 'mpl'", "MetaPseudoLabelsModel.teacher_supervised_weight = 0.0",
        "MetaPseudoLabelsModel.pseudo_labels = 'soft'", f"MetaPseudoLabelsModel.mpl_weight = {weight}"] + _UDA)
       for suffix, weight in (("", 1.0), ("_x100", 100.0), ("_off", 0.0))},
    # Supervised on 1,998 of the 2,000 true labels (the data needs >= 1 unlabeled point a moon): can the
    # network learn the moons at all in this budget?
    "oracle": ("Oracle: supervised on 1,998 true labels", [
        "run.method = 'supervised'", "build_dataset.num_labeled = 1998", "build_dataset.batch_size = 64"]),
}
ALL = {**METHODS, **VARIANTS}
FLAGS = flags.FLAGS
def define_flags():
  """Defined only when run as a script, so that tests can import the module beside other tools' flags."""
  flags.DEFINE_string("out", None, "output folder for two_moons.md, two_moons.png and two_moons.json")
  flags.DEFINE_integer("seeds", 10, "number of seeds per method (seeds first_seed .. first_seed + seeds - 1)")
  flags.DEFINE_integer("first_seed", 0, "first seed")
  flags.DEFINE_list("methods", ["supervised", "pseudo_labels", "mpl", "mpl_off"],
                    "methods and variants to run, in table order; known: " + ", ".join(ALL))
  flags.DEFINE_multi_string("gin_file", ["gin/two_moons.gin"], "base gin file(s), relative to the repository")
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings applied to every method, e.g. \"run.steps = 5000\"")
  flags.DEFINE_integer("plot_seed", 0, "seed whose decision boundaries are drawn (and diagnosed)")
  flags.DEFINE_list("diagnose", [], "methods to re-train on plot_seed with diagnostics of the feedback (e.g. mpl)")
  flags.DEFINE_list("diagnose_steps", ["0", "100", "300", "1000", "3000", "10000", "20000"],
                    "training steps at which the diagnostics are taken (the last one caps the run)")
  flags.DEFINE_string("title", "", "optional heading for the generated markdown section")
  flags.DEFINE_string("cache", None, "folder keeping each finished run's metrics, so that an interrupted sweep resumes "
                      "(runs/two_moons_cache, say); off by default")


FIGURE = ("supervised", "pseudo_labels", "mpl")  # the paper's three panels
# Sweep runs leave no files behind: no export, one checkpoint at the end of each phase, quiet.
SWEEP_BINDINGS = ["run.export = False", "run.checkpoint_every = 1000000", "run.verbose = 0"]


def _parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Fresh gin state from files + bindings, parsed as `mpl_tf.train` parses them."""
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  experiment.parse_gin([os.path.join(ROOT, f) for f in files], list(bindings))


def run_bindings(name: str, seed: int) -> List[str]:
  """The bindings of method `name`'s run with `seed` (after the gin files), for a sweep run and its diagnosis alike."""
  return SWEEP_BINDINGS + list(FLAGS.gin_bindings) + ALL[name][1] + [f"run.seed = {seed}"]


def run_one(name: str, seed: int, keep_model: bool = False):
  """One run of method `name` with `seed`; returns (metrics, model or None, seconds).

  With --cache, a finished run's metrics are kept in `<cache>/<name>.seed<seed>.json` under the run's bindings and
  read back instead of training again when they match (a run whose model is needed, for the figure, always trains),
  so an interrupted sweep resumes where it stopped.
  """
  bindings = run_bindings(name, seed)
  config = dict(gin_file=list(FLAGS.gin_file), bindings=bindings)
  path = os.path.join(FLAGS.cache, f"{name}.seed{seed}.json") if FLAGS.cache else None
  record = None if keep_model else read_cached(path, config)
  if record:
    return record["metrics"], None, record["seconds"]
  metrics, model, seconds = _train(bindings, name, seed, keep_model)
  write_cached(path, config, metrics, seconds)
  return metrics, model, seconds


def read_cached(path, config: dict):
  """The cached record at `path` if it was written for `config` (gin files and bindings), else None."""
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  return record if record["config"] == config else None


def write_cached(path, config: dict, metrics: dict, seconds: float) -> None:
  """Keeps a finished run's metrics at `path` (written whole or not at all); nothing when `path` is None."""
  if not path:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(dict(config=config, metrics=metrics, seconds=seconds), f)
  os.replace(path + ".tmp", path)


def _train(bindings, name: str, seed: int, keep_model: bool):
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  keras.backend.clear_session()
  _parse_gin(FLAGS.gin_file, bindings)
  workdir = tempfile.mkdtemp(prefix=f"two_moons_{name}_{seed}_")
  start = time.time()
  try:
    result = experiment.run(workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return result.metrics, (result.model if keep_model else None), time.time() - start


# --- diagnostics of the feedback ----------------------------------------------------------------------
def probe_feedback(model, x, y, labeled, unlabeled, rng, learning_rate: float, batch: int, reps: int = 20):
  """What the MPL teacher's update is made of at the current weights, averaged over `reps` unlabeled batches.

  Nothing is updated. For a fresh unlabeled batch and a label y_hat sampled from the teacher:
    h        = L_l(theta_S) - L_l(theta_S - lr * grad L_u(y_hat)): the feedback for one plain gradient step
               (the run's own h also contains the momentum part of the step, which is the same for any y_hat)
    g_sup    = || grad_T CE(y_l, T(x_l)) ||               the teacher's supervised gradient
    g_mpl    = || (h - b) grad_T CE(y_hat, T(x_u)) ||     the teacher's MPL gradient, b the run's baseline
    g_soft   = || grad_T L_l(theta_S - lr * grad L_u(softmax T(x_u))) ||   the exact one-step meta-gradient
    agree    = fraction of sampled labels equal to the true class; confidence = mean max softmax(T(x_u))
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  teacher, student = model.teacher, model.student
  t_vars, s_vars = teacher.trainable_variables, student.trainable_variables
  x_l, y_l = tf.constant(x[labeled]), tf.constant(y[labeled])
  norm = lambda grads: float(tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads])))
  labeled_loss = lambda: tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=False)))

  def loss_after_step(grads):
    """Labeled loss and its gradient after theta_S -= lr * grads; the student is restored afterwards."""
    old = [v.numpy() for v in s_vars]
    for v, g in zip(s_vars, grads):
      v.assign_sub(learning_rate * g)
    with tf.GradientTape() as tape:
      loss = labeled_loss()
    grads_after = tape.gradient(loss, s_vars)
    for v, o in zip(s_vars, old):
      v.assign(o)
    return float(loss), grads_after

  rows = []
  baseline = float(model.h_baseline.numpy())
  for r in range(reps):
    idx = rng.choice(unlabeled, size=batch, replace=False)
    x_u = tf.constant(x[idx])
    t_logits_u = teacher(x_u, training=False)
    y_hat = losses.pseudo_labels(t_logits_u, "sample", tf.constant([r, 12345], tf.int64))
    probs = tf.nn.softmax(t_logits_u)
    with tf.GradientTape() as tape:
      loss_u = tf.reduce_mean(losses.cross_entropy(y_hat, student(x_u, training=True)))
    before = float(labeled_loss())
    after, _ = loss_after_step(tape.gradient(loss_u, s_vars))
    h = before - after
    with tf.GradientTape() as tape:
      soft_u = tf.reduce_mean(losses.soft_cross_entropy(probs, student(x_u, training=True)))
    _, v_after = loss_after_step(tape.gradient(soft_u, s_vars))
    with tf.GradientTape(persistent=True) as t_tape:
      logits = teacher(tf.concat([x_l, x_u], 0), training=True)
      t_l, t_u = logits[:len(labeled)], logits[len(labeled):]
      sup = tf.reduce_mean(losses.cross_entropy(y_l, t_l))
      ce_hat = tf.reduce_mean(losses.cross_entropy(y_hat, t_u))
      with tf.GradientTape() as s_tape:  # nested: g_u depends on theta_T through the soft targets
        s_loss = tf.reduce_mean(losses.soft_cross_entropy(tf.nn.softmax(t_u), student(x_u, training=True)))
      g_u = s_tape.gradient(s_loss, s_vars)
      meta = losses.soft_meta_objective(learning_rate, g_u, v_after)
    g_sup = norm(t_tape.gradient(sup, t_vars))
    g_ce = norm(t_tape.gradient(ce_hat, t_vars))
    g_soft = norm([g if g is not None else tf.zeros_like(v) for g, v in zip(t_tape.gradient(meta, t_vars), t_vars)])
    del t_tape
    rows.append(dict(h=h, abs_h=abs(h), labeled_loss=before, g_sup=g_sup, g_mpl=abs(h - baseline) * g_ce,
                     g_soft=g_soft, agree=float(np.mean(y_hat.numpy() == y[idx])),
                     confidence=float(tf.reduce_mean(tf.reduce_max(probs, -1)))))
  out = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
  out["ratio_mpl"] = out["g_mpl"] / max(out["g_sup"], 1e-30)
  out["ratio_soft"] = out["g_soft"] / max(out["g_sup"], 1e-30)
  out["baseline"] = baseline
  out.update(preferred_labels(model, x, y, labeled, unlabeled))
  return out


def preferred_labels(model, x, y, labeled, unlabeled) -> Dict[str, float]:
  """Which label the feedback favours at every unlabeled point, to first order, and whom it agrees with.

  For one plain step of the student on (u, c), h_c = eta * grad L_l^T J(u)^T (p(u) - e_c) + O(eta^2), with
  J(u) the Jacobian of the student's logits at u. So the expected MPL update raises the teacher's probability
  of c* = argmin_c (J(u) grad L_l)_c: the class whose logit at u a gradient-descent step on the 6 labeled
  points would raise most. The feedback thus asks the teacher to label u the way supervised learning of the
  *student* would move it (a kernel vote of the labeled residuals, with the student's tangent kernel).
  Returns the fraction of unlabeled points where c* equals the true class, the teacher's and the student's
  current argmax.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  student, s_vars = model.student, model.student.trainable_variables
  x_l, y_l = tf.constant(x[labeled]), tf.constant(y[labeled])
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=False)))
  v = tape.gradient(loss, s_vars)
  x_u = tf.constant(x[unlabeled])
  with tf.autodiff.ForwardAccumulator(primals=s_vars, tangents=v) as acc:
    s_logits = student(x_u, training=False)
  preferred = tf.argmin(acc.jvp(s_logits), axis=-1, output_type=tf.int32).numpy()
  t_pred = tf.argmax(model.teacher(x_u, training=False), axis=-1, output_type=tf.int32).numpy()
  s_pred = tf.argmax(s_logits, axis=-1, output_type=tf.int32).numpy()
  return {"prefer_truth": float(np.mean(preferred == y[unlabeled])),
          "prefer_teacher": float(np.mean(preferred == t_pred)),
          "prefer_student": float(np.mean(preferred == s_pred))}


def diagnose(name: str, seed: int, checkpoints: Sequence[int]) -> List[Dict]:
  """Trains method `name` (an MPL variant) on `seed` like `experiment.run` does, probing at `checkpoints`.

  The MPL phase of `run` is one `train_phase` over the model's own Keras train function; here the same
  function runs in chunks between checkpoints on one iterator, without files. Each row: the step, the
  accuracies on all points, the run's own mean h and labeled loss since the previous checkpoint, and
  `probe_feedback`.
  """
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.data.two_moons import load_two_moons  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  from mpl_tf.schedules import learning_rate_at  # pylint: disable=import-outside-toplevel
  keras.backend.clear_session()
  _parse_gin(FLAGS.gin_file, run_bindings(name, seed))
  steps = int(checkpoints[-1])
  keras.utils.set_random_seed(seed)
  data = experiment.load_data(seed)
  model = experiment.main_model("mpl", data, seed, steps)
  points = load_two_moons(num_labeled=data.num_labeled, seed=seed)
  x, y = points["x"], points["y"]
  rng = np.random.default_rng(1000 + seed)
  iterator = iter(data.train)
  model._steps_per_execution.assign(max(1, min(500, steps)))  # pylint: disable=protected-access
  train_function = model.make_train_function(force=True)
  rows, step, logs = [], 0, {}
  for target in checkpoints:
    target = int(target)
    model.reset_metrics()
    while step < target:
      n = min(500, target - step)
      model._steps_per_execution.assign(n)  # pylint: disable=protected-access
      logs = {k: float(v) for k, v in train_function(iterator).items()}
      step = int(model.global_step.numpy())
    acc = model.evaluate(data.test, verbose=0, return_dict=True)
    row = dict(step=step, student_accuracy=float(acc["student/accuracy"]),
               teacher_accuracy=float(acc["teacher/accuracy"]), run_h=logs.get("mpl/h", float("nan")),
               run_labeled_loss=logs.get("student/labeled_loss", float("nan")))
    lr = float(learning_rate_at(model.student_optimizer))
    row.update(probe_feedback(model, x, y, points["labeled_index"], points["unlabeled_index"], rng, lr,
                              batch=data.unlabeled_batch_size))
    rows.append(row)
    print(f"  [{name} seed {seed}] " + " ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
  return rows


# --- figure ----------------------------------------------------------------------------------------
def plot(models: Dict[str, object], accuracies: Dict[str, float], seed: int, path: str) -> None:
  """Figure 2: decision regions of each method's evaluated student, all points and the 6 labeled ones."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from mpl_tf.data.two_moons import load_two_moons  # pylint: disable=import-outside-toplevel
  points = load_two_moons(seed=seed)
  x, y, labeled = points["x"], points["y"], points["labeled_index"]
  lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
  gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
  grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
  fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
  colours = np.array(["#d62728", "#1f77b4"])
  for ax, (name, model) in zip(axes[0], models.items()):
    logits = model.eval_student(grid, training=False).numpy()
    p1 = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1])).reshape(gx.shape)
    ax.contourf(gx, gy, p1, levels=[0.0, 0.5, 1.0], colors=["#f6c9c9", "#c6dbef"], alpha=0.9)
    ax.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=1.2)
    ax.scatter(x[:, 0], x[:, 1], c=colours[y], s=4, alpha=0.5, linewidths=0)
    ax.scatter(x[labeled, 0], x[labeled, 1], c=colours[y[labeled]], s=160, marker="*", edgecolors="k",
               linewidths=1.0, zorder=3)
    ax.set_title(f"{ALL[name][0]}\naccuracy {accuracies[name]:.3f}", fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
  fig.suptitle(f"TwoMoon, seed {seed}: 2,000 points, 6 labeled (stars); shaded = the student's decision",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --- report ----------------------------------------------------------------------------------------
BEGIN = "<!-- studies/two_moons/two_moons.py: begin generated section -->"
END = "<!-- studies/two_moons/two_moons.py: end -->"


def _stats(values: Sequence[float]) -> str:
  return f"{np.mean(values):.3f} | {np.std(values):.3f}"


def markdown(results: Dict, seeds: Sequence[int], diagnostics: Dict, command: str, seconds: float) -> str:
  lines = [BEGIN, ""]
  if FLAGS.title:
    lines += [f"### {FLAGS.title}", ""]
  lines += [f"`{command}` ({seconds / 60:.1f} min on this machine). Base config: "
            f"{', '.join(FLAGS.gin_file)}" + (f", plus {'; '.join(FLAGS.gin_bindings)}" if FLAGS.gin_bindings else "")
            + f". Accuracy on all 2,000 points, seeds {seeds[0]}-{seeds[-1]}; std is the population std over seeds.",
            "",
            "| method | student mean | std | teacher mean | std | seeds >= 0.95 (student) | s / run |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  for name, r in results.items():
    teacher = _stats(r["teacher"]) if not np.isnan(r["teacher"]).any() else "- | -"
    lines.append(f"| {ALL[name][0]} | {_stats(r['student'])} | {teacher} | "
                 f"{int(np.sum(np.array(r['student']) >= 0.95))} / {len(seeds)} | {np.mean(r['seconds']):.0f} |")
  lines += ["", "Per seed, student accuracy (teacher accuracy in parentheses where there is a teacher):", "",
            "| method | " + " | ".join(str(s) for s in seeds) + " |",
            "| --- | " + " | ".join("---" for _ in seeds) + " |"]
  for name, r in results.items():
    cells = [f"{s:.3f}" + (f" ({t:.3f})" if not np.isnan(t) else "") for s, t in zip(r["student"], r["teacher"])]
    lines.append(f"| {ALL[name][0]} | " + " | ".join(cells) + " |")
  paired = [(name, CONTROLS[name]) for name in results if CONTROLS.get(name) in results]
  if paired:
    lines += ["", "Paired by seed, student accuracy of the method minus its feedback-off control (points of "
              "accuracy x 100; sample std over seeds):", "",
              "| method - control | mean difference | std | seeds better / equal / worse |", "| --- | --- | --- | --- |"]
    for name, control in paired:
      diff = 100 * (np.array(results[name]["student"]) - np.array(results[control]["student"]))
      std = np.std(diff, ddof=1) if len(diff) > 1 else 0.0
      lines.append(f"| {name} - {control} | {np.mean(diff):+.2f} | {std:.2f} | {int(np.sum(diff > 0))} / "
                   f"{int(np.sum(diff == 0))} / {int(np.sum(diff < 0))} |")
  for name, rows in diagnostics.items():
    lines += ["", f"Diagnostics of {ALL[name][0]}, seed {FLAGS.plot_seed} (means over 20 random unlabeled batches "
              "at each step; h for one plain gradient step of the student on sampled labels; ratios are "
              "||MPL gradient|| / ||supervised gradient|| of the teacher; agree = sampled labels equal to "
              "the true class; preferred = the label the feedback favours at each unlabeled point, to first "
              "order, compared with the true class and with the teacher's argmax):", "",
              "| step | student acc | teacher acc | run mean h | mean abs h | labeled loss | ratio (sampled, h - b) "
              "| ratio (soft, exact) | agree | teacher confidence | preferred = truth | preferred = teacher |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
      lines.append(f"| {row['step']} | {row['student_accuracy']:.3f} | {row['teacher_accuracy']:.3f} | "
                   f"{row['run_h']:.2e} | {row['abs_h']:.2e} | {row['labeled_loss']:.2e} | {row['ratio_mpl']:.2e} | "
                   f"{row['ratio_soft']:.2e} | {row['agree']:.3f} | {row['confidence']:.3f} | {row['prefer_truth']:.3f} | "
                   f"{row['prefer_teacher']:.3f} |")
  lines += ["", END]
  return "\n".join(lines)


def write_markdown(path: str, section: str) -> None:
  """Replaces the generated section of an existing file (keeping the prose around it), or creates the file."""
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if BEGIN in text and END in text:
      text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
      text = text.rstrip("\n") + "\n\n" + section + "\n"
  else:
    text = "# TwoMoon (paper section 3.1, Figure 2)\n\n" + section + "\n"
  with open(path, "w") as f:
    f.write(text)


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  unknown = [m for m in FLAGS.methods + FLAGS.diagnose if m not in ALL]
  if unknown:
    raise app.UsageError(f"unknown methods {unknown}; known: {', '.join(ALL)}")
  not_mpl = [m for m in FLAGS.diagnose if "run.method = 'mpl'" not in ALL[m][1]]
  if not_mpl:
    raise app.UsageError(f"--diagnose takes MPL variants only, got {not_mpl}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().setLevel("ERROR")
  os.makedirs(FLAGS.out, exist_ok=True)
  from mpl_tf import console, runs as run_lib  # pylint: disable=import-outside-toplevel
  command = run_lib.thread_prefix() + console.shell_join(["python", "studies/two_moons/two_moons.py", *sys.argv[1:]])
  seeds = list(range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds))
  start = time.time()
  results, models = {}, {}
  for name in FLAGS.methods:
    r = {"student": [], "teacher": [], "student_before_finetune": [], "seconds": [], "metrics": []}
    for seed in seeds:
      keep = name in FIGURE and seed == FLAGS.plot_seed
      metrics, model, seconds = run_one(name, seed, keep_model=keep)
      if keep:
        models[name] = model
      r["student"].append(metrics["student/accuracy"])
      r["teacher"].append(metrics.get("teacher/accuracy", float("nan")))
      r["student_before_finetune"].append(metrics.get("student/accuracy_before_finetune", float("nan")))
      r["seconds"].append(seconds)
      r["metrics"].append(metrics)
      print(f"{name} seed {seed}: student {r['student'][-1]:.3f} teacher {r['teacher'][-1]:.3f} "
            f"({seconds:.0f} s)", flush=True)
    results[name] = r
  figure = {name: models[name] for name in FIGURE if name in models}
  if figure:
    plot(figure, {name: results[name]["student"][seeds.index(FLAGS.plot_seed)] for name in figure},
         FLAGS.plot_seed, os.path.join(FLAGS.out, "two_moons.png"))
  checkpoints = sorted({int(s) for s in FLAGS.diagnose_steps})
  diagnostics = {name: diagnose(name, FLAGS.plot_seed, checkpoints) for name in FLAGS.diagnose}
  seconds = time.time() - start
  write_markdown(os.path.join(FLAGS.out, "two_moons.md"), markdown(results, seeds, diagnostics, command, seconds))
  with open(os.path.join(FLAGS.out, "two_moons.json"), "w") as f:
    json.dump({"command": command, "gin_file": FLAGS.gin_file, "gin_bindings": FLAGS.gin_bindings,
               "method_bindings": {name: ALL[name][1] for name in results}, "seeds": seeds,
               "plot_seed": FLAGS.plot_seed, "seconds": seconds, "results": results,
               "diagnostics": diagnostics}, f, indent=1)
  print(f"wrote {FLAGS.out}/two_moons.md, two_moons.json" + (", two_moons.png" if figure else "")
        + f" in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
