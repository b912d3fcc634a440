"""Split rules on the real scikit-learn digits: class balance, disjointness, determinism, seeds, errors."""
import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from mpl_tf.data import splits

DIGITS = sk_datasets.load_digits().target


def _split(seed=0, **options):
  options.setdefault("num_labeled", 50)
  options.setdefault("num_test", 500)
  return splits.make_split(DIGITS, 10, seed=seed, **options)


def test_class_balanced_counts():
  s = _split(num_validation=100)
  for part, each in ((s.labeled, 5), (s.test, 50), (s.validation, 10)):
    np.testing.assert_array_equal(np.bincount(DIGITS[part], minlength=10), np.full(10, each))


def test_parts_are_disjoint_and_cover_the_pool():
  s = _split(num_validation=100)
  parts = [s.labeled, s.unlabeled, s.validation, s.test]
  joined = np.concatenate(parts)
  assert len(np.unique(joined)) == len(joined) == len(DIGITS)
  for part in parts:
    assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


def test_unlabeled_may_include_labeled_but_never_held_out():
  s = _split(num_validation=100, unlabeled_includes_labeled=True)
  assert set(s.labeled) <= set(s.unlabeled)
  assert not set(s.unlabeled) & (set(s.test) | set(s.validation))
  assert len(s.unlabeled) == len(DIGITS) - 600


def test_same_seed_same_split_and_different_seed_different_labels():
  a, b, c = _split(seed=3), _split(seed=3), _split(seed=4)
  for part in ("labeled", "unlabeled", "validation", "test"):
    np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
  assert a.digest() == b.digest() != c.digest()
  assert not np.array_equal(a.labeled, c.labeled)
  # held-out sets do not move with the seed: every seed is scored on the same images
  np.testing.assert_array_equal(a.test, c.test)


def test_fraction_counts_take_a_share_of_every_class():
  labels = np.repeat(np.arange(4), [100, 50, 7, 1])
  s = splits.make_split(labels, 4, num_labeled=0.1, unlabeled_includes_labeled=True)
  np.testing.assert_array_equal(np.bincount(labels[s.labeled], minlength=4), [10, 5, 1, 1])
  assert len(s.unlabeled) == len(labels)


@pytest.mark.parametrize("count, message", [
    (1005, "cannot be split evenly over 10 classes"),
    (5000, "needs 500 examples of each class"),
    (1.5, "must be in \\(0, 1\\]"),
])
def test_counts_that_cannot_be_class_balanced(count, message):
  with pytest.raises(ValueError, match=message):
    splits.make_split(DIGITS, 10, num_labeled=count)


def test_labeled_count_too_large_after_holding_out():
  with pytest.raises(ValueError, match="num_labeled=1700 needs 170 examples"):
    splits.make_split(DIGITS, 10, num_labeled=1700, num_test=500)


def test_labels_outside_range_are_named():
  bad = DIGITS.copy()
  bad[17] = 10
  message = "my.npz: 1 label\\(s\\) outside \\[0, 10\\); the first is 10 at position 17"
  with pytest.raises(ValueError, match=message):
    splits.check_labels(bad, 10, "my.npz")
  with pytest.raises(ValueError, match="outside"):
    splits.make_split(bad, 10, num_labeled=10)


def test_split_names_are_reproducible():
  assert splits.split_name("cifar10_4k", 3, 4000, 4000, 5000, 5000) == "cifar10_4k.seed3"
  assert splits.split_name("cifar10_4k", 3, 250, 4000, 5000, 5000) == "cifar10_4k@250.seed3"
  assert splits.split_name("imagenet_10pct", 0, 0.05, 0.1) == "imagenet_10pct@5%.seed0"
  assert splits.split_name("cifar10_4k", 1, 4000, 4000, 0, 5000) == "cifar10_4k.val0.seed1"


def test_derived_seeds_differ_by_stream_and_seed():
  seeds = {splits.derived_seed(s, k) for s in (0, 1) for k in ("labeled", "unlabeled")}
  assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)
  assert splits.derived_seed(5, "labeled") == splits.derived_seed(5, "labeled")
