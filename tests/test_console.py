"""A training run's console holds our lines only (`mpl_tf/console.py`); TensorFlow's talk goes to its log file.

One short digits run (gin/smoke.gin with the progress bar on) as a user starts it, TF_CPP_MIN_LOG_LEVEL unset,
with probes that warn the way libraries do: every line of its stdout and stderr must match one of our patterns
(the augmentation line, phase headers, the Keras progress bar, the metrics JSON, the summary, our warning), so any
TensorFlow line (C++ start-up lines, `cuInit`, `WARNING:tensorflow:`, a Python warning) fails the test, and the
log file WORKDIR/logs/train.log holds what the console did not show.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from mpl_tf import console
from tests.conftest import ROOT

# `python -m mpl_tf.train` as the console script runs it, with probes: when training starts, a library's
# UserWarning and DeprecationWarning, a TensorFlow Python warning (`WARNING:tensorflow:...` on a plain console),
# and a warning of our own, which the user must see.
PROBED_TRAIN = """
import logging, warnings
from mpl_tf import train  # the entry point's imports: TensorFlow loads under its console settings
import tensorflow as tf
run = train.experiment.run
def probed_run(*args, **kwargs):
  warnings.warn("probe: a library's UserWarning", UserWarning)
  warnings.warn("probe: a library's DeprecationWarning", DeprecationWarning)
  tf.get_logger().warning("probe: TensorFlow's Python warning")
  logging.getLogger("mpl_tf.probe").warning("probe: our own warning")
  return run(*args, **kwargs)
train.experiment.run = probed_run
train.run()
"""

PHASE = re.compile(r"\[\w+\] step \d+ of \d+( \(resumed\))?")
PROGRESS = re.compile(r"\[\w+\] \d+/\d+  ([\w/]+ \S+  )*\| run \d+ %(, ETA [\d:]+)?")  # mpl_tf.progress, plain lines
EVALUATION = re.compile(r"\[\w+\] step \d+: test accuracy: student \d+\.\d\d %(, teacher \d+\.\d\d %)?")
CLASSES = re.compile(r"mpl_tf: digits\.seed0: 10 classes \(labeled / test\): (\d \d+/\d+, ){9}\d \d+/\d+; "
                     r"[\d,]+ unlabeled, 0 validation, 500 test")
SUMMARY = [re.compile(p) for p in (
    r"mpl_tf\.train: mpl on digits\.seed0 finished at step 6",
    r"  test accuracy: student \d+\.\d\d % top-1, \d+\.\d\d % top-5; teacher \d+\.\d\d %",
    r"  on this split our docs quote: .+ \(studies/digits_results/digits_results\.md\)",
    r" {27}and: .+ points, .+ \(studies/attribution/feedback_cosine\.md\)",
    r"  metrics: (?P<w>\S+)/metrics\.json; curves: tensorboard --logdir (?P=w)/summaries",
    r"  exported student: (?P<w>\S+)/export/student",
    r"  evaluate: mpl-evaluate --workdir=\S+   \(or python -m mpl_tf\.evaluate\)",
    r"  predict:  mpl-predict --export_dir=\S+/export/student IMAGES_OR_FOLDERS   \(or python -m mpl_tf\.predict\)")]
AUGMENTATION = re.compile(r"mpl_tf: digits\.seed0: weak view: .+ \(\S+/augmentation\.json; see the views: "
                          r"mpl-views\)")
OUR_WARNING = "mpl_tf.train: warning: probe: our own warning"


def console_lines(text):
  """The lines a terminal shows: the progress bar redraws itself with \\r and backspaces."""
  return [line.replace("\b", "").rstrip() for line in re.split(r"[\r\n]", text)]


def not_ours(stdout, stderr, metrics):
  """Every console line that none of our patterns accounts for (the metrics JSON must be metrics.json)."""
  out = [line for line in console_lines(stdout) if line]
  strays = []
  if "{" in out and "}" in out:  # json.dumps(metrics, indent=2): "{" ... "}" on lines of their own
    start, end = out.index("{"), out.index("}")
    if json.loads("\n".join(out[start:end + 1])) != metrics:
      strays.append("the printed metrics differ from metrics.json")
    out = out[:start] + out[end + 1:]
  else:
    strays.append("no metrics JSON on stdout")
  summary_at = next((i for i, line in enumerate(out) if SUMMARY[0].fullmatch(line)), len(out))
  summary, out = out[summary_at:], out[:summary_at]
  if len(summary) != len(SUMMARY) or not all(p.fullmatch(line) for p, line in zip(SUMMARY, summary)):
    strays += [f"summary: {line}" for line in summary] or ["no summary"]
  strays += [f"stdout: {line}" for line in out
             if not any(p.fullmatch(line) for p in (AUGMENTATION, PHASE, PROGRESS, EVALUATION, CLASSES))]
  strays += [f"stderr: {line}" for line in console_lines(stderr) if line and line != OUR_WARNING]
  return strays


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
  """The probed digits smoke run with the progress bar, as a user's shell starts it; its finished process."""
  workdir = tmp_path_factory.mktemp("console")
  env = {k: v for k, v in os.environ.items() if k not in (console.LEVEL_VARIABLE, "PYTHONWARNINGS")}
  proc = subprocess.run([sys.executable, "-c", PROBED_TRAIN, f"--workdir={workdir}", "--gin_file=gin/digits.gin",
                         "--gin_file=gin/smoke.gin", "--gin_bindings=run.verbose = 1", "--gin_bindings=run.eval_every = 4"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_a_training_run_prints_only_our_lines(probed_run):
  workdir, proc = probed_run
  metrics = json.loads((workdir / "metrics.json").read_text())
  strays = not_ours(proc.stdout, proc.stderr, metrics)
  assert not strays, "lines on the console that are not ours:\n" + "\n".join(strays)
  lines = console_lines(proc.stdout)
  assert any(PROGRESS.fullmatch(line) for line in lines) and "[mpl] step 0 of 6" in lines
  # Issue 27, item 7: what the run learns from, at its start; the held-out accuracies at eval_every; plain lines
  # into a pipe (no \r or \b); the run's share and ETA on the progress lines.
  assert sum(bool(CLASSES.fullmatch(line)) for line in lines) == 1
  assert sum(bool(EVALUATION.fullmatch(line)) and line.startswith("[mpl] step 4:") for line in lines) == 1
  assert "\r" not in proc.stdout and "\b" not in proc.stdout
  assert "[mpl] 6/6" in proc.stdout and "| run 100 %" in proc.stdout and ", ETA " in proc.stdout
  assert console_lines(proc.stderr).count(OUR_WARNING) == 1  # our warning is shown, once


def test_the_log_file_keeps_what_the_console_does_not_show(probed_run):
  workdir, _ = probed_run
  log = (workdir / "logs" / "train.log").read_text()
  assert log.startswith("==== mpl_tf.train ")
  for expected in ("UserWarning: probe: a library's UserWarning", "DeprecationWarning: probe: a library's "
                   "DeprecationWarning", "WARNING tensorflow: probe: TensorFlow's Python warning",
                   "WARNING mpl_tf.probe: probe: our own warning",
                   "INFO tensorflow: Assets written to:"):  # the export's INFO line: the log file starts at INFO
    assert expected in log, expected
  # What TensorFlow's libraries printed while loading (oneDNN, CUDA stubs, absl's notice) is here, not on stderr.
  loading = log.split("TensorFlow's libraries while loading (C++ log level 3):\n", 1)[1]
  assert re.match(r"(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} )", loading)


def test_the_tf_log_level_flag_wins_over_the_variable_which_wins_over_quiet(monkeypatch):
  monkeypatch.delenv(console.LEVEL_VARIABLE, raising=False)
  assert console.cpp_level(["mpl-train", "--workdir=x"]) == console.DEFAULT_LEVEL == 3
  monkeypatch.setenv(console.LEVEL_VARIABLE, "1")
  assert console.cpp_level(["mpl-train"]) == 1
  assert console.cpp_level(["mpl-train", "--tf_log_level=0"]) == 0
  assert console.cpp_level(["mpl-train", "--tf_log_level", "2", "--tf_log_level=0"]) == 0  # the last, as absl
  assert console.cpp_level(["mpl-train", "--tf_log_level=7"]) == 1  # absl refuses it once it parses the flags
  assert console.cpp_level(["mpl-predict", "--", "--tf_log_level=0"]) == 1  # after "--": an argument, not a flag


def test_loading_lines_are_shown_by_their_level():
  text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          "I0000 00:00:1.0    1 port.cc:153] oneDNN custom operations are on.\n"
          "I0000 00:00:1.1    1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
          "To enable the following instructions: AVX2, in other operations, rebuild TensorFlow\n"
          "E0000 00:00:1.2    1 cuda_platform.cc:52] failed call to cuInit\n"
          "F0000 00:00:1.3    1 x.cc:1] Check failed\n")
  lines = text.splitlines(keepends=True)
  assert console.shown_at(text, 3) == lines[5]
  assert console.shown_at(text, 2) == "".join(lines[4:])
  assert console.shown_at(text, 0) == text
  assert console.shown_at("Traceback (most recent call last):\n" + text, 3).startswith("Traceback")  # not TF's log


def test_the_default_start_of_a_command_prints_nothing_of_tensorflows():
  env = {k: v for k, v in os.environ.items() if k != console.LEVEL_VARIABLE}
  probe = ("import os, sys\nfrom mpl_tf import predict\n"
           "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules)")
  quiet, loud = (subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300, check=False) for args in ([], ["--tf_log_level=0"]))
  assert quiet.returncode == 0 and quiet.stdout.split() == ["3", "True"] and quiet.stderr == ""
  assert loud.returncode == 0 and loud.stdout.split() == ["0", "True"]
  # At level 0 whatever the libraries print while loading is shown, unsorted.
  assert all(re.match(r"(WARNING: All log messages|[IWEF]\d{4} |To enable the following)", line)
             for line in loud.stderr.splitlines())


def test_the_install_drops_only_pips_notices_about_a_local_indexs_missing_project_pages(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import quiet_pip  # pylint: disable=import-outside-toplevel
  index = tmp_path / "simple"
  (index / "numpy").mkdir(parents=True)
  notice = "WARNING: Location 'file://{}/' is ignored: it is neither a file nor a directory.\n"
  assert quiet_pip.is_missing_project_page(notice.format(index / "tf-keras"))  # the index lacks the project
  assert not quiet_pip.is_missing_project_page(notice.format(tmp_path / "missing" / "tf-keras"))  # no index there
  assert not quiet_pip.is_missing_project_page("ERROR: No matching distribution found for tf-keras\n")
  assert not quiet_pip.is_missing_project_page(notice.format(index / "tf-keras").replace("WARNING", "ERROR"))
  failed = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "quiet_pip.py"), "--no-such-option"],
                          capture_output=True, text=True, timeout=120, check=False)
  assert failed.returncode != 0 and "no such option" in failed.stderr  # pip's errors and status pass through


def test_the_end_of_run_summary_quotes_the_runs_methods_figures_and_commands_a_shell_reads():
  """The printed follow-up commands are quoted for a shell (a work directory with a space in it broke them on
  copy-paste), and each method is told its own figures: a Reduced MPL run on digits Reduced MPL's, an MPL run
  MPL's and its feedback's, UDA the recipe's table line only. One subprocess: importing the entry point defines
  its flags, and loads TensorFlow once."""
  program = ("from mpl_tf import train\n"
             "print(train.summary({'method': 'mpl', 'split': 'digits.seed0', 'step': 6, 'student/accuracy': 0.5}, "
             "'my runs/a', True))\n"
             "for method in ('mpl', 'reduced_mpl', 'uda', 'pseudo_labels'):\n"
             "  print(method, '|', train.summary({'method': method, 'split': 'digits.seed0', 'step': 6,"
             " 'student/accuracy': 0.5}, 'w', False).replace('\\n', ' / '))")
  proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "  evaluate: mpl-evaluate --workdir='my runs/a'   (or python -m mpl_tf.evaluate)" in proc.stdout
  assert "  predict:  mpl-predict --export_dir='my runs/a/export/student' IMAGES_OR_FOLDERS" in proc.stdout
  assert "curves: tensorboard --logdir 'my runs/a/summaries'" in proc.stdout
  lines = dict(line.split(" | ", 1) for line in proc.stdout.strip().splitlines() if " | " in line)
  assert "MPL 95.47" in lines["mpl"] and "feedback (this recipe's" in lines["mpl"] and "Reduced" not in lines["mpl"]
  assert "Reduced MPL 95.93" in lines["reduced_mpl"] and "MPL 95.47" not in lines["reduced_mpl"]
  assert "UDA 96.00" in lines["uda"] and "feedback" not in lines["uda"]
  assert "our docs quote" not in lines["pseudo_labels"]


def test_a_recorded_command_line_reads_back_as_typed_and_a_gin_string_binding_keeps_its_double_quotes():
  args = ["python", "-m", "mpl_tf.compare", "--gin_bindings=build_dataset.path = 'my data/x.npz'", "--out=a b",
          "--note=it's $HOME", "--seeds=0,1"]
  line = console.shell_join(args)
  assert shlex.split(line) == args
  assert line.startswith("python -m mpl_tf.compare --gin_bindings=\"build_dataset.path = 'my data/x.npz'\" ")
  assert "$HOME" in line and line.endswith(" --seeds=0,1")  # a `$` keeps shlex's single quotes

