"""Seeded, class-balanced, disjoint labeled / validation / test / unlabeled splits (pure numpy).

The paper's benchmarks are defined by their splits: CIFAR-10-4K is 400 labeled images a class, SVHN-1K 100 a
class, ImageNet-10% a tenth of every class. Everything here works on a label array and returns index arrays,
so the same rules serve TFDS, scikit-learn's digits, a folder of images and a .npz file, and can be tested
without TensorFlow.

Two random streams are used on purpose:
  * the *held-out* sets (validation and, where the source has no test split, test) are drawn with
    `holdout_seed`, which does not move with the run's seed, so runs with different seeds are scored on the
    same images;
  * the labeled subset is drawn from what remains with `seed`, so different seeds give different labels.

A count is either an int (a total, split equally over the classes: it must be a multiple of the number of
classes) or a float in (0, 1] (that fraction of every class, rounded half up, at least one example of every
class that has any). `None` or 0 means none.
"""
import dataclasses
import hashlib
from typing import Union

import numpy as np

Count = Union[int, float, None]


@dataclasses.dataclass(frozen=True)
class Split:
  """Index arrays (sorted, int64) into a pool of examples.

  `labeled`, `validation` and `test` never overlap. `unlabeled` never overlaps `validation` or `test`; it
  overlaps `labeled` only when the split was made with `unlabeled_includes_labeled=True` (ImageNet-10%, where
  all 1.28M training images are used as unlabeled data).
  """
  labeled: np.ndarray
  unlabeled: np.ndarray
  validation: np.ndarray
  test: np.ndarray

  def digest(self) -> str:
    """A short fingerprint of the labeled, validation and test indices, to check two runs used one split."""
    h = hashlib.sha1()
    for part in (self.labeled, self.validation, self.test):
      h.update(np.asarray(part, np.int64).tobytes())
      h.update(b"|")
    return h.hexdigest()[:10]


def check_labels(labels: np.ndarray, num_classes: int, where: str = "labels") -> np.ndarray:
  """Returns `labels` as int64 after checking they are integers in [0, num_classes).

  Raises:
    ValueError: naming `where` (a file, a split) and the first offending position and value.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{where}: labels must be a 1-d array, got shape {labels.shape}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    if not np.all(np.equal(np.mod(labels, 1), 0)):
      bad = int(np.flatnonzero(np.mod(labels, 1))[0])
      raise ValueError(f"{where}: labels must be integers; position {bad} holds {labels[bad].item()!r}")
  labels = labels.astype(np.int64)
  outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if outside.size:
    i = int(outside[0])
    raise ValueError(
        f"{where}: {outside.size} label(s) outside [0, {num_classes}); the first is {labels[i]} at position {i}")
  return labels


def per_class_counts(class_sizes: np.ndarray, count: Count, what: str) -> np.ndarray:
  """How many examples of each class a class-balanced subset of size `count` takes.

  Args:
    class_sizes: int array [num_classes], examples available per class.
    count: total (int, multiple of num_classes), fraction of each class (float in (0, 1]), or None / 0.
    what: the parameter's name, for error messages (e.g. "num_labeled").

  Raises:
    ValueError: the count cannot be class-balanced, or a class has too few examples.
  """
  class_sizes = np.asarray(class_sizes, np.int64)
  num_classes = class_sizes.size
  if count is None or (not isinstance(count, bool) and count == 0):
    return np.zeros(num_classes, np.int64)
  if isinstance(count, (bool, np.bool_)):
    raise ValueError(f"{what}={count!r}: give an int total or a float fraction in (0, 1]")
  if isinstance(count, (float, np.floating)):
    if not 0.0 < count <= 1.0:
      raise ValueError(f"{what}={count}: a float is a fraction of every class and must be in (0, 1]")
    counts = np.floor(count * class_sizes + 0.5).astype(np.int64)
    return np.where(class_sizes > 0, np.maximum(counts, 1), 0)
  count = int(count)
  if count < 0:
    raise ValueError(f"{what}={count} is negative")
  if count % num_classes:
    lower = count - count % num_classes
    raise ValueError(
        f"{what}={count} cannot be split evenly over {num_classes} classes (remainder {count % num_classes}); "
        f"use a multiple of {num_classes}, e.g. {max(lower, num_classes)} or {lower + num_classes}")
  each = count // num_classes
  short = np.flatnonzero(class_sizes < each)
  if short.size:
    c = int(short[0])
    raise ValueError(
        f"{what}={count} needs {each} examples of each class, but class {c} has only {class_sizes[c]} "
        f"available ({short.size} class(es) are short)")
  return np.full(num_classes, each, np.int64)


def make_split(labels: np.ndarray, num_classes: int, num_labeled: Count, *, num_validation: Count = 0,
               num_test: Count = 0, seed: int = 0, holdout_seed: int = 0,
               unlabeled_includes_labeled: bool = False) -> Split:
  """Draws a class-balanced, disjoint split of a pool of labeled examples.

  Test and validation are held out first (with `holdout_seed`), then `num_labeled` are drawn from the rest
  (with `seed`); the unlabeled set is the rest of the pool, with or without the labeled examples.

  Args:
    labels: int array [N], the class of every example of the pool.
    num_classes: labels must lie in [0, num_classes).
    num_labeled: see the module docstring for int / float / None. A float 1.0 labels everything not held out.
    num_validation: held-out validation examples, class-balanced.
    num_test: held-out test examples, class-balanced (for sources without a test split of their own).
    seed: draws the labeled subset.
    holdout_seed: draws the held-out sets; kept fixed across runs so all seeds are scored on the same data.
    unlabeled_includes_labeled: if True the labeled examples are also in the unlabeled set.

  Returns:
    A `Split` of sorted int64 index arrays into `labels`.
  """
  labels = check_labels(labels, num_classes)
  sizes = np.bincount(labels, minlength=num_classes)
  test_counts = per_class_counts(sizes, num_test, "num_test")
  val_counts = per_class_counts(sizes - test_counts, num_validation, "num_validation")
  remaining = sizes - test_counts - val_counts
  if np.any(remaining < 0):
    c = int(np.flatnonzero(remaining < 0)[0])
    raise ValueError(f"class {c} has {sizes[c]} examples, fewer than num_test + num_validation need "
                     f"({test_counts[c]} + {val_counts[c]})")
  labeled_counts = per_class_counts(remaining, num_labeled, "num_labeled")
  if np.any(labeled_counts > remaining):
    c = int(np.flatnonzero(labeled_counts > remaining)[0])
    raise ValueError(f"num_labeled needs {labeled_counts[c]} examples of class {c}, but only {remaining[c]} "
                     "remain after holding out validation and test")

  holdout_rng = np.random.default_rng(holdout_seed)
  label_rng = np.random.default_rng(seed)
  parts = {"labeled": [], "unlabeled": [], "validation": [], "test": []}
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    members = holdout_rng.permutation(members)
    t, v = test_counts[c], val_counts[c]
    parts["test"].append(members[:t])
    parts["validation"].append(members[t:t + v])
    rest = label_rng.permutation(np.sort(members[t + v:]))
    parts["labeled"].append(rest[:labeled_counts[c]])
    parts["unlabeled"].append(rest if unlabeled_includes_labeled else rest[labeled_counts[c]:])
  return Split(**{k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64)
                  for k, v in parts.items()})


def format_count(count: Count) -> str:
  """`4000` -> "4000", `0.1` -> "10%"."""
  if isinstance(count, (float, np.floating)):
    return f"{100 * count:g}%"
  return str(count)


def split_name(dataset: str, seed: int, num_labeled: Count = None, default_num_labeled: Count = None,
               num_validation: Count = None, default_num_validation: Count = None) -> str:
  """A reproducible name for a split, in the spirit of FixMatch's `cifar10.3@4000-1`.

  `cifar10_4k` with its default counts and seed 3 is `cifar10_4k.seed3`; with 250 labels
  `cifar10_4k@250.seed3`; with a non-default validation size `cifar10_4k.val1000.seed3`.
  """
  name = dataset
  if num_labeled != default_num_labeled:
    name += f"@{format_count(num_labeled)}"
  if num_validation != default_num_validation:
    name += f".val{format_count(num_validation or 0)}"
  return f"{name}.seed{seed}"


def derived_seed(seed: int, stream: str) -> int:
  """A 31-bit seed for one random stream (a shuffle, a TFDS file order) derived from the run's seed."""
  digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
