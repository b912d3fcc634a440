"""`python -m mpl_tf.train --gin_file=gin/two_moons.gin --workdir=DIR [--gin_bindings=...]`.

Parses the gin files and bindings, fails before any training on a bad binding or an unknown name, then
runs `mpl_tf.experiment.run` and prints the final metrics that it also writes to DIR/metrics.json.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TensorFlow's C++ info lines out of the progress bar

from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
from absl import logging  # pylint: disable=wrong-import-position

from mpl_tf import trainer, workdir  # pylint: disable=wrong-import-position
from mpl_tf import experiment  # pylint: disable=wrong-import-position  # registers the gin configurables before any file is parsed

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "gin config file(s), e.g. gin/two_moons.gin; later ones override")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. \"run.seed = 3\"; override the files")
flags.DEFINE_string("workdir", None, "directory for metrics.json, the operative config and checkpoints")
flags.DEFINE_bool("overwrite", False, "delete the run WORKDIR holds (checkpoints, summaries, metrics, export) "
                  "and start afresh; without it a run resumes only when its configuration equals the recorded one")
flags.DEFINE_bool("allow_config_change", False, "resume WORKDIR's run although the configuration differs from "
                  "the recorded one (e.g. to add a phase after a finished one); the new configuration is recorded")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  experiment.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  try:
    changed = experiment.prepare_workdir(FLAGS.workdir, overwrite=FLAGS.overwrite,
                                         allow_change=FLAGS.allow_config_change)
  except workdir.ConfigChanged as e:
    raise SystemExit(f"mpl_tf.train: {e}") from e
  if changed:
    print("mpl_tf.train: resuming under a changed configuration (--allow_config_change):\n  " + "\n  ".join(changed),
          file=sys.stderr, flush=True)
  try:
    result = experiment.run(FLAGS.workdir)
  except trainer.NonFiniteLossError as e:
    raise SystemExit(f"mpl_tf.train: {e}") from e
  print(json.dumps(result.metrics, indent=2, sort_keys=True))
  sys.stdout.flush()


def run():
  """Console-script entry point (`mpl-train`, pyproject.toml)."""
  app.run(main)


if __name__ == "__main__":
  run()
