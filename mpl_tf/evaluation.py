"""Scores of a trained classifier on labeled examples: top-1, top-k, per-class accuracy, the confusion matrix.

Pure numpy over (labels, probabilities), so they are checked against hand-computed values
(tests/test_evaluate.py) and serve any source of predictions: an exported student's signature, a restored
teacher. `plot_confusion` draws the matrix for a report. `mpl_tf.evaluate` is the command that uses them.
"""
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

TOP_K = 5  # reported only beyond TOP_K classes, where it says something


def top_k_accuracy(labels: np.ndarray, probabilities: np.ndarray, k: int) -> float:
  """Fraction of examples whose label is among the k most probable classes (ties broken by class order, as
  `np.argsort` does; Keras' top-k metric counts a label tied at the k-th place too)."""
  labels = np.asarray(labels)
  if not len(labels):
    raise ValueError("no examples to score")
  top = np.argsort(-np.asarray(probabilities), axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """[true class, predicted class] -> count."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
  return matrix


def scores(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> Dict:
  """{'accuracy', 'top5_accuracy' (beyond 5 classes), 'per_class_accuracy' {name: fraction or None when the
  class has no example}, 'per_class_count', 'confusion_matrix' [[...]]} of predictions against labels."""
  labels, probabilities = np.asarray(labels, np.int64), np.asarray(probabilities, np.float64)
  num_classes = probabilities.shape[1]
  if len(class_names) != num_classes:
    raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}); got values in [{labels.min()}, {labels.max()}]")
  matrix = confusion_matrix(labels, np.argmax(probabilities, axis=1), num_classes)
  counts = matrix.sum(axis=1)
  out = {"num_examples": int(len(labels)), "accuracy": top_k_accuracy(labels, probabilities, 1)}
  if num_classes > TOP_K:
    out[f"top{TOP_K}_accuracy"] = top_k_accuracy(labels, probabilities, TOP_K)
  out["per_class_accuracy"] = {name: (float(matrix[c, c] / counts[c]) if counts[c] else None)
                               for c, name in enumerate(class_names)}
  out["per_class_count"] = {name: int(counts[c]) for c, name in enumerate(class_names)}
  out["confusion_matrix"] = matrix.tolist()
  return out


def predict_all(batches: Iterable[Tuple[np.ndarray, np.ndarray]],
                predictors: Dict[str, Callable[[np.ndarray], np.ndarray]]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """Runs every predictor (name -> batch -> probabilities [N, K]) over the (x, y) batches: (labels, {name: probs})."""
  labels: List[np.ndarray] = []
  probs: Dict[str, List[np.ndarray]] = {name: [] for name in predictors}
  for x, y in batches:
    labels.append(np.asarray(y))
    for name, predict in predictors.items():
      probs[name].append(np.asarray(predict(x)))
  if not labels:
    raise ValueError("the evaluation split is empty")
  return np.concatenate(labels), {name: np.concatenate(p) for name, p in probs.items()}


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], title: str, path: str,
                   max_labels: Optional[int] = 40) -> str:
  """Writes the row-normalised confusion matrix (counts in the cells when it is small) as a PNG at `path`."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  matrix = np.asarray(matrix)
  rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  n = len(class_names)
  size = min(12.0, 2.5 + 0.45 * n)
  fig, ax = plt.subplots(figsize=(size, size))
  ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
  if n <= (max_labels or n):
    ax.set_xticks(range(n), labels=class_names, rotation=90)
    ax.set_yticks(range(n), labels=class_names)
  if n <= 20:
    for i in range(n):
      for j in range(n):
        if matrix[i, j]:
          ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                  color="white" if rows[i, j] > 0.5 else "black")
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
