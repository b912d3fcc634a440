"""tools/compare_runs.py: tells identical runs from runs that differ in a metric or in one checkpoint tensor."""
import json
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import compare_runs  # pylint: disable=wrong-import-position


def _run(path, weight, accuracy, step=3):
  os.makedirs(path / "checkpoints" / "mpl")
  tf.train.Checkpoint(w=tf.Variable(weight), step=tf.Variable(step)).save(str(path / "checkpoints" / "mpl" / "ckpt"))
  (path / "metrics.json").write_text(json.dumps({"student/accuracy": accuracy, "method": "mpl"}))
  return str(path)


def test_identical_runs_and_each_kind_of_difference(tmp_path, capsys):
  a = _run(tmp_path / "a", [1.0, 2.0], 0.5)
  assert compare_runs.compare(a, _run(tmp_path / "same", [1.0, 2.0], 0.5))
  assert "mpl 3/3 tensors equal" in capsys.readouterr().out
  assert not compare_runs.compare(a, _run(tmp_path / "weight", [1.0, 2.5], 0.5))
  assert "mpl 2/3 tensors equal (first that differ: ['w/.ATTRIBUTES/VARIABLE_VALUE'])" in capsys.readouterr().out
  assert not compare_runs.compare(a, _run(tmp_path / "metric", [1.0, 2.0], 0.6))
  assert compare_runs.metric_differences({"x": 1, "y": 2}, {"x": 1, "z": 3}) == {"y": (2, None), "z": (None, 3)}


def test_a_tolerance_accepts_float_rounding_and_nothing_else(tmp_path, capsys):
  a = _run(tmp_path / "a", [1.0, 2.0], 0.5)
  assert not compare_runs.compare(a, _run(tmp_path / "rounded", [1.0, 2.0 + 4e-6], 0.5 + 1e-7))
  assert compare_runs.compare(a, str(tmp_path / "rounded"), tolerance=5e-6)  # 4e-6 off: 2e-6 of its largest value
  assert "mpl 3/3 tensors within 5e-06" in capsys.readouterr().out.splitlines()[-1]
  assert not compare_runs.compare(a, _run(tmp_path / "off", [1.0, 2.0 + 2e-5], 0.5), tolerance=5e-6)
  assert compare_runs.checkpoint_differences(a, str(tmp_path / "off"), tolerance=5e-6)["mpl"] == (
      3, ["w/.ATTRIBUTES/VARIABLE_VALUE"])
  assert compare_runs.metric_differences({"x": 0.5, "n": 3}, {"x": 0.5 + 1e-7, "n": 4}, tolerance=1e-6) == {
      "n": (3, 4)}
  # An integer tensor (the step) must still be equal, unless ignored.
  assert not compare_runs.compare(a, _run(tmp_path / "step", [1.0, 2.0], 0.5, step=4), tolerance=1.0)
  assert compare_runs.checkpoint_differences(a, str(tmp_path / "step"), ignore=("step/",))["mpl"] == (2, [])
