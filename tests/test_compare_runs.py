"""tools/compare_runs.py: tells identical runs from runs that differ in a metric or in one checkpoint tensor."""
import json
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import compare_runs  # pylint: disable=wrong-import-position


def _run(path, weight, accuracy):
  os.makedirs(path / "checkpoints" / "mpl")
  tf.train.Checkpoint(w=tf.Variable(weight), step=tf.Variable(3)).save(str(path / "checkpoints" / "mpl" / "ckpt"))
  (path / "metrics.json").write_text(json.dumps({"student/accuracy": accuracy, "method": "mpl"}))
  return str(path)


def test_identical_runs_and_each_kind_of_difference(tmp_path, capsys):
  a = _run(tmp_path / "a", [1.0, 2.0], 0.5)
  assert compare_runs.compare(a, _run(tmp_path / "same", [1.0, 2.0], 0.5))
  assert "mpl 4/4 tensors equal" in capsys.readouterr().out
  assert not compare_runs.compare(a, _run(tmp_path / "weight", [1.0, 2.5], 0.5))
  assert "mpl 3/4 tensors equal (first that differ: ['w/.ATTRIBUTES/VARIABLE_VALUE'])" in capsys.readouterr().out
  assert not compare_runs.compare(a, _run(tmp_path / "metric", [1.0, 2.0], 0.6))
  assert compare_runs.metric_differences({"x": 1, "y": 2}, {"x": 1, "z": 3}) == {"y": (2, None), "z": (None, 3)}
