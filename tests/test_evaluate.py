"""The scores `mpl-evaluate` reports, computed by hand (the command itself on a trained run:
tests/test_end_to_end.py, which shares that file's smoke run)."""

import numpy as np
import pytest

from mpl_tf import evaluation

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
