"""`mpl-evaluate --workdir=DIR` or `--export_dir=DIR`: scores a trained run without retraining.

Scores the exported student (and, for a run's work directory, the teacher as training left it, restored from the
main phase's checkpoint) on the run's test split (`--split=validation` for the held-out validation split), or on
any dataset given by gin files / bindings on top of the run's recorded configuration (e.g.
`--gin_bindings="build_dataset.name = 'npz'" --gin_bindings="build_dataset.path = 'more.npz'"`). Reports top-1,
top-5 (beyond 5 classes), per-class accuracy and the confusion matrix, as JSON (`<out_dir>/<split>.json`) and PNGs
(`<out_dir>/confusion_<network>_<split>.png`), and prints a summary.

The student is scored through the export's `preprocessed` signature on the pipeline's evaluation batches, so a
work directory's test accuracy equals the `student/accuracy` its metrics.json reports (tests/test_evaluate.py).
TensorFlow's Python logs and warnings go to WORKDIR/logs/evaluate.log (with --export_dir: OUT_DIR/evaluate.log), its
C++ log lines are off below fatal ones unless `--tf_log_level` says otherwise (`mpl_tf.console`).
"""
import json
import os

from absl import flags

from mpl_tf import console, usage

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run's work directory (mpl-train --workdir): scores its exported student and "
                    "its teacher on the run's data")
flags.DEFINE_string("export_dir", None, "an exported student (WORKDIR/export/student), scored on the dataset its "
                    "export records, or on the one the gin files / bindings give")
flags.DEFINE_multi_string("gin_file", [], "gin file(s) applied on top of the run's recorded configuration, e.g. to "
                          "score another dataset")
flags.DEFINE_multi_string("gin_bindings", [], "gin bindings applied last, e.g. \"build_dataset.path = 'x.npz'\"")
flags.DEFINE_enum("split", "test", ["test", "validation"], "which evaluation split of the dataset to score")
flags.DEFINE_string("out_dir", None, "where the JSON and PNGs go (default: WORKDIR/evaluation, or "
                    "EXPORT_DIR/../evaluation)")
flags.DEFINE_enum(console.LEVEL_FLAG, None, ["0", "1", "2", "3"], console.LEVEL_HELP)

usage.exit_on_help(__name__, "mpl-evaluate", __doc__, [
    "workdir", "export_dir", "gin_file", "gin_bindings", "split", "out_dir", console.LEVEL_FLAG])

with console.loading_tensorflow():  # TensorFlow's C++ log level is set before it loads (--tf_log_level)
  from absl import app
  import numpy as np
  import tensorflow as tf

  from mpl_tf import cli, evaluation
  from mpl_tf import experiment
  from mpl_tf import export as export_lib
  from mpl_tf.keras import keras
  from mpl_tf.workdir import CONFIG_FILE

def _configure(workdir, export_dir):
  """Parses the recorded configuration, then the user's files and bindings; returns the loaded export."""
  if workdir:
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(config_path):
      raise FileNotFoundError(f"{workdir} holds no run ({CONFIG_FILE} is missing): give the --workdir of a run "
                              "trained by mpl-train")
    export_dir = os.path.join(workdir, "export", "student")
    if not os.path.isdir(export_dir):
      raise FileNotFoundError(f"{workdir} has no exported student ({export_dir}): the run was trained with "
                              "run.export = False or has not finished; re-run its mpl-train command to finish it")
    with open(config_path) as f:
      recorded = f.read()
  exported = export_lib.load_export(export_dir)
  if not workdir:
    recorded = exported.metadata.get("config", "")
    if not recorded and not FLAGS.gin_file and not FLAGS.gin_bindings:
      raise ValueError(f"{export_dir} records no dataset configuration: give --gin_file / --gin_bindings that "
                       "name the dataset to score (e.g. --gin_bindings=\"build_dataset.name = 'digits'\")")
  experiment.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, recorded=recorded)
  return exported


def _batches(dataset):
  for x, y in dataset:
    yield x, y.numpy()


@cli.reports_errors("mpl-evaluate")
def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}: mpl-evaluate takes only flags")
  console.start("mpl-evaluate")
  if bool(FLAGS.workdir) == bool(FLAGS.export_dir):
    raise ValueError("give exactly one of --workdir=DIR (a run) and --export_dir=DIR (an exported student)")
  exported = _configure(FLAGS.workdir, FLAGS.export_dir)
  out_dir = FLAGS.out_dir or (os.path.join(FLAGS.workdir, "evaluation") if FLAGS.workdir else
                              os.path.join(os.path.dirname(os.path.normpath(exported.path)), "evaluation"))
  # TensorFlow's Python logs and warnings: the run's logs/ beside train.log, else beside the report.
  console.log_to(os.path.join(FLAGS.workdir, "logs", "evaluate.log") if FLAGS.workdir else
                 os.path.join(out_dir, "evaluate.log"), "mpl-evaluate")
  settings = experiment.run_settings()
  keras.utils.set_random_seed(settings["seed"])
  data = experiment.load_data(settings["seed"])
  dataset = {"test": data.test, "validation": data.validation}[FLAGS.split]
  if dataset is None:
    raise ValueError(f"{data.split_name} holds no validation split out (build_dataset.num_validation = 0): "
                     "use --split=test")
  if tuple(data.input_shape) != tuple(exported.input_shape):
    raise ValueError(f"the dataset's inputs have shape {tuple(data.input_shape)} but the exported student takes "
                     f"{tuple(exported.input_shape)}; score it on data of its shape")
  predictors = {"student": lambda x: exported.predict(x.numpy(), preprocessed=True)["probabilities"]}
  if FLAGS.workdir:
    model = experiment.restore_main_model(settings["method"], data, settings["seed"], settings["steps"],
                                          FLAGS.workdir)
    teacher = model.teacher_for_eval
    if teacher is not None:
      predictors["teacher"] = lambda x: tf.nn.softmax(tf.cast(teacher(x, training=False), tf.float32)).numpy()
  labels, probabilities = evaluation.predict_all(_batches(dataset), predictors)
  num_classes = probabilities["student"].shape[1]
  names = list(exported.class_names)
  if len(names) != num_classes:
    raise ValueError(f"{exported.path}: {len(names)} class names for {num_classes} classes")
  report = {"dataset": data.split_name, "split": FLAGS.split, "workdir": FLAGS.workdir,
            "export_dir": exported.path, "class_names": names}
  os.makedirs(out_dir, exist_ok=True)
  for network, probs in probabilities.items():
    report[network] = evaluation.scores(labels, probs, names)
    report[network]["confusion_png"] = evaluation.plot_confusion(
        np.array(report[network]["confusion_matrix"]), names, f"{network}, {data.split_name} {FLAGS.split}",
        os.path.join(out_dir, f"confusion_{network}_{FLAGS.split}.png"))
  path = os.path.join(out_dir, f"{FLAGS.split}.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  print(_summary(report, path), flush=True)


def _summary(report, path: str) -> str:
  lines = [f"mpl-evaluate: {report['dataset']} {report['split']} split"]
  for network in ("student", "teacher"):
    if network in report:
      r = report[network]
      top5 = f", top-5 {100 * r['top5_accuracy']:.2f} %" if "top5_accuracy" in r else ""
      worst = min(((a, n) for n, a in r["per_class_accuracy"].items() if a is not None), default=None)
      weakest = f"; weakest class {worst[1]} ({100 * worst[0]:.1f} %)" if worst else ""
      lines.append(f"  {network}: top-1 {100 * r['accuracy']:.2f} %{top5} on {r['num_examples']} examples{weakest}")
  lines.append(f"  report: {path} (per-class accuracy, confusion matrix; PNGs beside it)")
  return "\n".join(lines)


def run():
  """Console-script entry point (`mpl-evaluate`, pyproject.toml)."""
  app.run(main)


if __name__ == "__main__":
  run()
