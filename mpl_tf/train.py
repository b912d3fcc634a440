"""`python -m mpl_tf.train --gin_file=gin/two_moons.gin --workdir=DIR [--gin_bindings=...]`.

Parses the gin files and bindings, fails before any training on a bad binding or an unknown name, then
runs `mpl_tf.experiment.run`, prints the final metrics that it also writes to DIR/metrics.json, and ends with a
short summary: the student's and the teacher's accuracy beside the supervised figure our docs quote for the
recipe (where there is one), where the export is, and the commands that evaluate it and predict with it.
A user's mistake is one line on stderr and exit status 1 (`mpl_tf.cli`). TensorFlow's Python logs and warnings
go to DIR/logs/train.log, its C++ log lines are off below fatal ones unless `--tf_log_level` says otherwise
(`mpl_tf.console`): the console holds our lines only (tests/test_console.py).
One run at a time holds a work directory (`workdir.lock`); SIGINT or SIGTERM saves the current phase at the next
step boundary and exits with one line and status 128 + the signal (`mpl_tf.stopping`): the same command resumes.
"""
import contextlib
import json
import os
import shlex
import sys

from absl import flags

from mpl_tf import console, usage

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "gin config file(s), e.g. gin/two_moons.gin; later ones override")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. \"run.seed = 3\"; override the files")
flags.DEFINE_string("workdir", None, "directory for metrics.json, the operative config and checkpoints (required "
                    "unless --show_config)")
flags.DEFINE_bool("overwrite", False, "delete the run WORKDIR holds (checkpoints, summaries, metrics, export) "
                  "and start afresh; without it a run resumes only when its configuration equals the recorded one")
flags.DEFINE_bool("allow_config_change", False, "resume WORKDIR's run although the configuration differs from "
                  "the recorded one (e.g. to add a phase after a finished one); the new configuration is recorded")
flags.DEFINE_bool("show_config", False, "print the merged configuration of the gin files and bindings (every "
                  "value, with the file and line that sets it, and the defaults left) and exit without training")
flags.DEFINE_enum(console.LEVEL_FLAG, None, ["0", "1", "2", "3"], console.LEVEL_HELP)
usage.exit_on_help(__name__, "mpl-train", __doc__, [
    "gin_file", "gin_bindings", "workdir", "overwrite", "allow_config_change", "show_config", console.LEVEL_FLAG],
    more="Every hyperparameter is a gin binding: see a recipe's with mpl-train --show_config "
         "--gin_file=gin/own_data.gin (the recipes: gin/*.gin; own data: README, \"Your own images\").")

with console.loading_tensorflow():  # TensorFlow's C++ log level is set before it loads (--tf_log_level)
  from absl import app
  from tensorflow.experimental import dtensor

  from mpl_tf import cli, layout, show_config, stopping, workdir
  from mpl_tf import experiment  # registers the gin configurables before any file is parsed


# What our docs quote for a recipe's default split (a test holds each figure to its document): split -> the
# (figure, where, methods) triples, one summary line each, printed for a run of one of `methods` (a Reduced MPL
# run on digits gets Reduced MPL's figures, not MPL's); the feedback's paired difference against it switched off
# is one of them (rule D3 of studies/attribution/decision_rules.md).
QUOTED_FIGURES = {
    "digits": (("supervised 90.27 +- 1.01 %, UDA 96.00 +- 1.59 %, MPL 95.47 +- 1.36 % (seeds 0-2)",
                "studies/digits_results/digits_results.md", ("supervised", "uda", "mpl")),
               ("MPL's feedback (this recipe's: cosine x0.1) against it switched off: +0.20 +- 0.40 points, "
                "better on 3 of 5 seeds, no measurable difference", "studies/attribution/feedback_cosine.md",
                ("mpl",)),
               ("Reduced MPL 95.93 +- 1.27 %, the same with the feedback off 95.87 +- 1.33 % (seeds 0-2)",
                "studies/reduced_mpl/digits.md", ("reduced_mpl",))),
    "two_moons": (("MPL 85.5 %, the same with the feedback off (mpl_weight = 0): 85.5 % (seeds 0-4)",
                   "studies/two_moons/two_moons_feedback_no_uda/two_moons.md", ("mpl",)),),
}


def summary(metrics, workdir: str, exported: bool) -> str:
  """The lines a user reads at the end of a run."""
  base = str(metrics.get("split", "")).rsplit(".seed", 1)[0]
  def pct(key):
    return f"{100 * metrics[key]:.2f} %" if key in metrics else None
  lines = [f"mpl_tf.train: {metrics.get('method')} on {metrics.get('split')} finished at step {metrics.get('step')}"]
  scores = [f"student {pct('student/accuracy')} top-1" + (f", {pct('student/top5_accuracy')} top-5"
                                                          if "student/top5_accuracy" in metrics else "")]
  if "teacher/accuracy" in metrics:
    scores.append(f"teacher {pct('teacher/accuracy')}")
  lines.append("  test accuracy: " + "; ".join(scores))
  lead = "on this split our docs quote"
  quotes = [(figure, where) for figure, where, methods in QUOTED_FIGURES.get(base, ())
            if metrics.get("method") in methods]
  for i, (figure, where) in enumerate(quotes):
    lines.append(f"  {lead if i == 0 else 'and'.rjust(len(lead))}: {figure} ({where})")
  # The commands are quoted for a shell (a work directory with a space in it), to be copied as they are.
  lines.append(f"  metrics: {os.path.join(workdir, 'metrics.json')}; curves: tensorboard --logdir "
               f"{shlex.quote(os.path.join(workdir, 'summaries'))}")
  if exported:
    export_dir = os.path.join(workdir, "export", "student")
    lines += [f"  exported student: {export_dir}",
              f"  evaluate: mpl-evaluate --workdir={shlex.quote(workdir)}   (or python -m mpl_tf.evaluate)",
              f"  predict:  mpl-predict --export_dir={shlex.quote(export_dir)} IMAGES_OR_FOLDERS   "
              "(or python -m mpl_tf.predict)"]
  return "\n".join(lines)


def log_file(workdir: str) -> str:
  """WORKDIR/logs/train.log, where TensorFlow's Python logs and warnings go (`mpl_tf.console`); each further
  client of a multi-client DTensor run keeps its own (train.client<N>.log)."""
  client = dtensor.client_id()
  return os.path.join(workdir, "logs", "train.log" if client == 0 else f"train.client{client}.log")


@cli.reports_errors("mpl_tf.train")
def main(argv):
  del argv
  console.start("mpl_tf.train")
  experiment.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  if FLAGS.show_config:
    sources = show_config.binding_sources(FLAGS.gin_file, FLAGS.gin_bindings, experiment.find_gin_file)
    print(show_config.render(sources), flush=True)
    return
  if not FLAGS.workdir:
    raise SystemExit("mpl_tf.train: give --workdir=DIR, the run's directory (or --show_config to see the "
                     "configuration without training); mpl-train --help lists the flags")
  with contextlib.ExitStack() as stack:
    if layout.is_chief():  # the other clients of a multi-client DTensor run share the chief's directory
      try:
        stack.enter_context(workdir.lock(FLAGS.workdir, command=shlex.join(sys.argv)))
      except workdir.WorkdirLocked as e:
        raise SystemExit(f"mpl_tf.train: {e}") from e
    # Several DTensor clients save collectively: a signal that reaches one client would stop it alone, and the
    # others would wait for it forever. There the signals keep their default (the checkpoints every
    # run.checkpoint_every steps remain).
    if dtensor.num_clients() == 1:
      stack.enter_context(stopping.graceful_stop())
    try:
      changed = experiment.prepare_workdir(FLAGS.workdir, overwrite=FLAGS.overwrite,
                                           allow_change=FLAGS.allow_config_change)
    except workdir.ConfigChanged as e:
      raise SystemExit(f"mpl_tf.train: {e}") from e
    console.log_to(log_file(FLAGS.workdir), "mpl_tf.train")  # the directory is ours now: nothing above wrote to it
    if layout.is_chief():
      workdir.log_command(FLAGS.workdir, sys.argv)
    if changed:
      print("mpl_tf.train: resuming under a changed configuration (--allow_config_change):\n  "
            + "\n  ".join(changed), file=sys.stderr, flush=True)
    try:
      result = experiment.run(FLAGS.workdir)  # a NaN loss (trainer.NonFiniteLossError) is one line, by cli
    except stopping.StopRequested as e:
      print(f"mpl_tf.train: {cli.one_line(e)}", file=sys.stderr, flush=True)  # without gin's "In call to" lines
      raise SystemExit(e.exit_status) from None
  print(json.dumps(result.metrics, indent=2, sort_keys=True))
  exported = os.path.isdir(os.path.join(FLAGS.workdir, "export", "student"))
  print(summary(result.metrics, FLAGS.workdir, exported), flush=True)


def run():
  """Console-script entry point (`mpl-train`, pyproject.toml)."""
  app.run(main)


if __name__ == "__main__":
  run()
