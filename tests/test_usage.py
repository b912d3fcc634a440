"""`--help` of the three commands (fast: before TensorFlow loads; exit 0; our flags with their help) and
`mpl-train --show_config` (a recipe's merged configuration with the file and line of each value), issue 27, item 5.

Before: `mpl-train --help` printed "USAGE ... Try --helpfull" after TensorFlow's 15 s import and exited 1."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FLAGS = {"train": ["gin_file", "gin_bindings", "workdir", "overwrite", "allow_config_change", "show_config",
                   "tf_log_level"],
         "evaluate": ["workdir", "export_dir", "gin_file", "gin_bindings", "split", "out_dir", "tf_log_level"],
         "predict": ["export_dir", "format", "top_k", "batch_size", "output", "log_file", "tf_log_level"],
         "compare": ["gin_file", "gin_bindings", "methods", "seeds", "steps", "workroot", "out"],
         "views": ["gin_file", "gin_bindings", "out", "images", "strong", "seed", "tf_log_level"]}


@pytest.mark.parametrize("command", list(FLAGS))
def test_help_lists_our_flags_with_their_help_and_exits_0_without_loading_tensorflow(command, tmp_path):
  # A `tensorflow` that cannot be imported first on the path: the help must not need it.
  (tmp_path / "tensorflow").mkdir()
  (tmp_path / "tensorflow" / "__init__.py").write_text("raise ImportError('help loaded tensorflow')\n")
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
  proc = subprocess.run([sys.executable, "-m", f"mpl_tf.{command}", "--help"], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, check=False, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith(f"mpl-{command}: ")
  listed = [line.strip()[2:] for line in proc.stdout.splitlines() if line.startswith("  --")]
  assert listed == FLAGS[command] + ["helpfull   every flag, TensorFlow's included"]
  assert "gin config file(s), e.g. gin/two_moons.gin" in proc.stdout or command != "train"
  # The same without the fake: the real import would otherwise be what fails.
  proc = subprocess.run([sys.executable, "-m", f"mpl_tf.{command}", "-h"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0 and proc.stdout.startswith(f"mpl-{command}: ")


def _line_of(path, text):
  with open(os.path.join(ROOT, path)) as f:
    return next(i for i, line in enumerate(f, 1) if line.startswith(text))


def test_show_config_prints_every_value_with_the_file_and_line_that_sets_it_and_trains_nothing(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "mpl_tf.train", "--show_config", "--gin_file=gin/own_data.gin",
                         "--gin_bindings=run.seed = 4"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = {line.split("#")[0].strip(): line.split("#")[-1].strip() for line in proc.stdout.splitlines()
           if " = " in line}
  # own_data.gin overrides what gin/algorithms/mpl_uda.gin (included through gin/digits.gin) sets
  assert lines["MetaPseudoLabelsModel.pseudo_labels = 'soft'"] == (
      f"gin/own_data.gin:{_line_of('gin/own_data.gin', 'MetaPseudoLabelsModel.pseudo_labels')}")
  # ... as gin/digits.gin overrides its feedback, and own_data.gin's temperature overrides the class default
  assert lines["MetaPseudoLabelsModel.feedback = 'cosine'"] == (
      f"gin/digits.gin:{_line_of('gin/digits.gin', 'MetaPseudoLabelsModel.feedback =')}")
  assert lines["MetaPseudoLabelsModel.label_temperature = 0.5"] == (
      f"gin/own_data.gin:{_line_of('gin/own_data.gin', 'MetaPseudoLabelsModel.label_temperature')}")
  assert lines["run.seed = 4"] == "--gin_bindings:1"
  assert lines["MetaPseudoLabelsModel.teacher_supervised_weight = 1.0"] == "default"
  assert lines["run.steps = %STEPS"].startswith("gin/")
  assert os.listdir(tmp_path) == []  # no work directory, nothing written


def test_train_without_a_workdir_says_what_to_give():
  proc = subprocess.run([sys.executable, "-m", "mpl_tf.train", "--gin_file=gin/two_moons.gin"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("mpl_tf.train: give --workdir=DIR")
