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
import gin  # pylint: disable=wrong-import-position

from mpl_tf import trainer  # pylint: disable=wrong-import-position
from mpl_tf import experiment  # pylint: disable=wrong-import-position  # registers the gin configurables before any file is parsed

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "gin config file(s), e.g. gin/two_moons.gin; later ones override")
flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. \"run.seed = 3\"; override the files")
flags.DEFINE_string("workdir", None, "directory for metrics.json, the operative config and checkpoints")
flags.mark_flag_as_required("workdir")


def parse_gin(files, bindings) -> None:
  """Parses gin, turning gin's errors into one clear message that names the binding or file at fault."""
  # Includes are written from the project root ('gin/data/digits.gin'), so they resolve from any directory.
  gin.add_config_file_search_path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    gin.parse_config_files_and_bindings(files, bindings)
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    raise SystemExit(f"mpl_tf.train: bad gin configuration ({', '.join(files) or 'no files'}; bindings "
                     f"{bindings}): {e}") from e


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  try:
    metrics = experiment.run(FLAGS.workdir)
  except trainer.NonFiniteLossError as e:
    raise SystemExit(f"mpl_tf.train: {e}") from e
  print(json.dumps(metrics, indent=2, sort_keys=True))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
