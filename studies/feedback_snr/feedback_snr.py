"""Signal and noise of the MPL feedback h in a real run: how much of h the pseudo labels decide.

  python studies/feedback_snr/feedback_snr.py --gin_file=gin/digits.gin --label=new \\
      --out=studies/feedback_snr/feedback_snr.json \\
      --gin_bindings="MetaPseudoLabelsModel.feedback = 'label_effect'" \\
      --gin_bindings="MetaPseudoLabelsModel.mpl_weight = 1.0"
  python studies/feedback_snr/feedback_snr.py --gin_file=gin/digits.gin --label=old \\
      --out=studies/feedback_snr/feedback_snr.json \\
      --gin_bindings="MetaPseudoLabelsModel.feedback = 'loss_difference'" \\
      --gin_bindings="MetaPseudoLabelsModel.feedback_batch_norm = 'inference'" \\
      --gin_bindings="MetaPseudoLabelsModel.mpl_weight = 1.0"

(gin/digits.gin's own feedback is the cosine, which has no label part to separate: name the form to probe.)

Trains one MPL run of the gin configuration (the same code as `python -m mpl_tf.train`) and, in windows of
consecutive steps after the student's wait (`--windows`, `--window_steps`), stops at every step and probes the
state: the real train step is run `--draws` times from that exact state (every variable and optimizer slot
restored in between), each time with another pseudo-label draw, once per batch-norm mode of the measurement,
and its h_raw = L(theta) - L(theta'), h_label = L(theta + D0) - L(theta') and h_null = h_raw - h_label are
recorded. Then the run's own step is taken and the next state probed.

Per window it reports, for every (form of h, batch-norm mode):
  label spread    sqrt(mean over steps of the variance over draws): the part of h the labels decide (signal);
                  h_raw and h_label have the same spread, since they differ by h_null, fixed at a state
  noise           the part the labels do not decide, E_draws[h] at each step, less the baseline b. For the
                  form and mode the run trains with, b is the run's own moving baseline and the figure is
                  sqrt(mean over steps of (E[h] - b)^2); for the others (no baseline of their own) it is the
                  standard deviation of E[h] over the window's steps, a lower bound on what any moving
                  baseline leaves
  SNR             label spread / noise
and the correlation of the label-decided part (h - E_draws[h]) between the two batch-norm modes.
Results are merged into --out (JSON) under --label; `--table` prints the markdown table of a saved file.
About 8 minutes per run of gin/digits.gin on the 2-core CPU here with the defaults.
"""
import json
import os
import sys

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", ["gin/digits.gin"], "experiment gin file(s)")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings (e.g. the feedback form under test)")
flags.DEFINE_list("windows", ["250", "700", "1400"], "first step of each probed window (after the wait)")
flags.DEFINE_integer("window_steps", 30, "consecutive steps probed in each window")
flags.DEFINE_integer("draws", 4, "pseudo-label draws per probed state")
flags.DEFINE_integer("seed", 0, "run.seed")
flags.DEFINE_string("label", "run", "name of this run's entry in --out")
flags.DEFINE_string("out", None, "JSON file to merge this run's figures into")
flags.DEFINE_string("table", None, "print the markdown table of this saved JSON file and exit")

FORMS = ("h_raw", "h_label")
MODES = ("train", "inference")


def build(seed: int):
  """The run's data and compiled MPL model, as `experiment.run` makes them (single device)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
  data = experiment.load_data(seed)
  steps = gin.query_parameter("run.steps")
  if isinstance(steps, gin.config.ConfigurableReference):  # a macro, e.g. run.steps = %STEPS
    steps = gin.query_parameter(str(steps))
  model = experiment.main_model("mpl", data, seed, steps)
  return data, model


def probe(model, element, draws: int):
  """h of every form and batch-norm mode for `draws` pseudo-label draws from the current state, unchanged."""
  variables = (list(model.variables) + model.teacher_optimizer.variables() + model.student_optimizer.variables())
  saved = [v.numpy() for v in variables]
  seed, mode = model.seed, model.feedback_batch_norm
  out = {(form, m): [] for form in FORMS for m in MODES}
  try:
    for d in range(draws):
      for m in MODES:
        model.seed, model.feedback_batch_norm = 10_000 + d, m  # read in eager mode at every call
        model.reset_metrics()
        metrics = model.train_step(element)
        for form in FORMS:
          out[form, m].append(float(metrics[f"mpl/{form}"]))
        for v, value in zip(variables, saved):
          v.assign(value)
  finally:
    model.seed, model.feedback_batch_norm = seed, mode
    model.reset_metrics()
  return {k: np.array(v) for k, v in out.items()}


def summarise(samples, baselines, run_form: str, run_mode: str):
  """Figures of one window from per-step probes (module doc)."""
  rows = {}
  for form in FORMS:
    for m in MODES:
      h = np.array([s[form, m] for s in samples])  # [steps, draws]
      spread = float(np.sqrt(np.mean(np.var(h, axis=1, ddof=1))))
      expected = h.mean(axis=1)
      own = form == run_form and m == run_mode
      noise = float(np.sqrt(np.mean((expected - baselines) ** 2))) if own else float(np.std(expected, ddof=1))
      rows[f"{form}/{m}"] = dict(label_spread=spread, noise=noise, snr=spread / max(noise, 1e-30),
                                 mean=float(expected.mean()), own_baseline=own)
  centred = {m: np.concatenate([s["h_label", m] - s["h_label", m].mean() for s in samples]) for m in MODES}
  rows["bn_mode_correlation"] = float(np.corrcoef(centred["train"], centred["inference"])[0, 1])
  return rows


def run(argv):
  del argv
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  experiment.parse_gin([os.path.join(ROOT, f) for f in FLAGS.gin_file],
                  ["run.verbose = 0"] + list(FLAGS.gin_bindings))
  tf.config.experimental.enable_op_determinism()
  data, model = build(FLAGS.seed)
  run_form = {"label_effect": "h_label", "loss_difference": "h_raw"}.get(model.feedback)
  if run_form is None:
    raise SystemExit("feedback_snr: the run's feedback must be 'label_effect' or 'loss_difference'")
  step_fn = tf.function(model.train_step)
  iterator = iter(data.train)
  windows = sorted(int(w) for w in FLAGS.windows)
  result = {"bindings": list(FLAGS.gin_bindings), "gin_file": FLAGS.gin_file, "feedback": model.feedback,
            "feedback_batch_norm": model.feedback_batch_norm, "windows": {}}
  step = 0
  for start in windows:
    while step < start:
      step_fn(next(iterator))
      step += 1
    samples, baselines = [], []
    for _ in range(FLAGS.window_steps):
      element = next(iterator)
      baselines.append(float(model.h_baseline.numpy()))
      samples.append(probe(model, element, FLAGS.draws))
      step_fn(element)
      step += 1
    result["windows"][str(start)] = summarise(samples, np.array(baselines), run_form, model.feedback_batch_norm)
    print(json.dumps({start: result["windows"][str(start)]}), flush=True)
  if FLAGS.out:
    saved = {}
    if os.path.exists(FLAGS.out):
      with open(FLAGS.out) as f:
        saved = json.load(f)
    from mpl_tf import console, runs  # pylint: disable=import-outside-toplevel
    result["command"] = runs.thread_prefix() + console.shell_join(["python", *sys.argv])  # regenerates this entry
    saved[FLAGS.label] = result
    with open(FLAGS.out, "w") as f:
      json.dump(saved, f, indent=2, sort_keys=True)


def table(path: str) -> str:
  """Markdown: one row per (run, window, form/mode) with spread, noise and SNR."""
  with open(path) as f:
    saved = json.load(f)
  lines = ["| run (trains with) | window start | h, batch norm | label spread | noise | SNR |",
           "| --- | --- | --- | --- | --- | --- |"]
  for label, result in saved.items():
    for start, rows in result["windows"].items():
      for key, row in rows.items():
        if key == "bn_mode_correlation":
          continue
        mark = " (own baseline)" if row["own_baseline"] else ""
        lines.append(f"| {label} ({result['feedback']}, {result['feedback_batch_norm']}) | {start} | {key}{mark} | "
                     f"{row['label_spread']:.1e} | {row['noise']:.1e} | {row['snr']:.2f} |")
      lines.append(f"| {label} | {start} | corr. of label part, train vs inference BN | "
                   f"{rows['bn_mode_correlation']:.2f} | | |")
  return "\n".join(lines)


def main(argv):
  if FLAGS.table:
    print(table(FLAGS.table))
    return
  run(argv)


if __name__ == "__main__":
  app.run(main)
