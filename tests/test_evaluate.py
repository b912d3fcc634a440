"""`mpl-evaluate`: scores computed by hand, and the command on a trained run reproducing its metrics.json."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mpl_tf import evaluation
from tests.conftest import ROOT, train

PROBS = np.array([[0.7, 0.2, 0.1],   # label 0: right
                  [0.5, 0.3, 0.2],   # label 1: predicted 0; second choice 1
                  [0.1, 0.2, 0.7],   # label 2: right
                  [0.3, 0.4, 0.3]])  # label 2: predicted 1; 0 and 2 tie for second, 0 comes first
LABELS = np.array([0, 1, 2, 2])


def test_scores_by_hand():
  out = evaluation.scores(LABELS, PROBS, ["a", "b", "c"])
  assert out["accuracy"] == 0.5
  assert "top5_accuracy" not in out  # 3 classes: top-5 says nothing
  assert out["per_class_accuracy"] == {"a": 1.0, "b": 0.0, "c": 0.5}
  assert out["per_class_count"] == {"a": 1, "b": 1, "c": 2}
  assert out["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
  assert evaluation.top_k_accuracy(LABELS, PROBS, 2) == 0.75
  assert evaluation.top_k_accuracy(LABELS, PROBS, 3) == 1.0


def test_top5_beyond_five_classes_and_classes_without_examples():
  probs = np.full((2, 7), 0.01)
  probs[0, [6, 5, 4, 3, 2]] = [0.5, 0.2, 0.1, 0.06, 0.05]  # label 0 is 6th: outside the top 5
  probs[1, [0, 1, 2, 3, 4]] = [0.5, 0.2, 0.1, 0.06, 0.05]  # label 4 is 5th: inside
  out = evaluation.scores(np.array([0, 4]), probs, [str(c) for c in range(7)])
  assert out["accuracy"] == 0.0 and out["top5_accuracy"] == 0.5
  assert out["per_class_accuracy"]["1"] is None and out["per_class_count"]["1"] == 0


def test_scores_refuse_labels_outside_the_classes():
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
    evaluation.scores(np.array([0, 3]), PROBS[:2], ["a", "b", "c"])


def _evaluate(*flags):
  return subprocess.run([sys.executable, "-m", "mpl_tf.evaluate", *flags], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


def test_evaluate_a_run_reproduces_its_metrics_and_writes_the_report(tmp_path):
  run = tmp_path / "run"
  proc = train(run, ["gin/digits.gin", "gin/smoke.gin"], "run.steps = 20", "run.finetune_steps = 4")
  assert proc.returncode == 0, proc.stderr[-2000:]
  metrics = json.loads((run / "metrics.json").read_text())
  proc = _evaluate(f"--workdir={run}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((run / "evaluation" / "test.json").read_text())
  # The exported student and the restored teacher score exactly what training reported: no retraining.
  assert report["student"]["accuracy"] == pytest.approx(metrics["student/accuracy"], abs=1e-6)
  assert report["student"]["top5_accuracy"] == pytest.approx(metrics["student/top5_accuracy"], abs=1e-6)
  assert report["teacher"]["accuracy"] == pytest.approx(metrics["teacher/accuracy"], abs=1e-6)
  assert report["student"]["num_examples"] == 500 and len(report["class_names"]) == 10
  assert np.array(report["student"]["confusion_matrix"]).sum() == 500
  assert os.path.getsize(report["student"]["confusion_png"]) > 1000
  assert "student: top-1" in proc.stdout and "teacher: top-1" in proc.stdout
  # An export alone is scored on the dataset its export records; another split by a binding.
  proc = _evaluate(f"--export_dir={run}/export/student", f"--out_dir={tmp_path}/alone")
  assert proc.returncode == 0, proc.stderr[-2000:]
  alone = json.loads((tmp_path / "alone" / "test.json").read_text())
  assert alone["student"]["accuracy"] == report["student"]["accuracy"] and "teacher" not in alone
  proc = _evaluate(f"--workdir={run}", "--split=validation")
  assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("mpl-evaluate: digits")
  proc = _evaluate(f"--workdir={run}", "--split=validation", "--gin_bindings=build_dataset.num_validation = 100",
                   f"--out_dir={tmp_path}/validation")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((tmp_path / "validation" / "validation.json").read_text())["student"]["num_examples"] == 100
