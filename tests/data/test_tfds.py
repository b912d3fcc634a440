"""The three TFDS benchmarks on `tfds.testing.mock_data` (random images with the real features), offline.

mock_data ignores split slicing and serves the same random examples for every split; our splits address
examples by position, so they work on it unchanged. No test here touches the network.
"""
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mpl_tf.data import build_dataset
from mpl_tf.data.tfds_source import DatasetNotPreparedError, TfdsSource

N = 100  # mock examples per split

CASES = {
    # name: (build options, num_classes, image side, labeled, unlabeled, validation)
    "cifar10_4k": (dict(num_labeled=20, num_validation=10), 10, 32, 20, N - 30, 10),
    "svhn_1k": (dict(num_labeled=20), 10, 32, 20, (N - 20) + N, 0),  # rest of train + extra
    "imagenet_10pct": (dict(image_size=24), 1000, 24, None, N, 0),  # 10% of each class, at least 1
}


@pytest.fixture
def mock():
  with tfds.testing.mock_data(num_examples=N):
    yield


@pytest.mark.parametrize("name", sorted(CASES))
def test_structure_dtypes_shapes_and_batch_sizes(mock, name):
  options, num_classes, side, num_labeled, num_unlabeled, num_validation = CASES[name]
  data = build_dataset(name, batch_size=4, uda_ratio=3, eval_batch_size=32, seed=1, **options)
  assert data.num_classes == num_classes and data.input_shape == (side, side, 3)
  assert data.num_unlabeled == num_unlabeled and data.num_validation == num_validation
  if num_labeled is not None:
    assert data.num_labeled == num_labeled
  else:  # one labeled image for each class present in the mock data
    assert 0 < data.num_labeled <= N
  assert data.unlabeled_batch_size == 12 and data.split_name.endswith(".seed1")

  (x_l, y_l), (x_weak, x_strong) = next(iter(data.train))
  assert x_l.dtype == x_weak.dtype == x_strong.dtype == tf.float32 and y_l.dtype == tf.int32
  assert x_l.shape == (4, side, side, 3) and y_l.shape == (4,)
  assert x_weak.shape == x_strong.shape == (12, side, side, 3)
  for x in (x_l, x_weak, x_strong):
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  assert np.all((y_l.numpy() >= 0) & (y_l.numpy() < num_classes))

  x, y = next(iter(data.labeled))
  assert x.shape == (4, side, side, 3) and y.dtype == tf.int32

  seen = 0
  for x, y in data.test:  # finite, every test example once
    assert x.dtype == tf.float32 and x.shape[1:] == (side, side, 3) and x.shape[0] <= 32
    assert np.all((y.numpy() >= 0) & (y.numpy() < num_classes))
    seen += int(x.shape[0])
  assert seen == data.num_test == N
  if num_validation:
    assert sum(int(x.shape[0]) for x, _ in data.validation) == num_validation
  else:
    assert data.validation is None


def test_subsets_are_read_back_in_label_order(mock):
  source = TfdsSource("cifar10")
  indices = np.array([3, 17, 42, 99])
  labels = [int(y) for _, y in source.examples(indices)]
  np.testing.assert_array_equal(labels, source.pool_labels[indices])


def test_single_view_and_determinism(mock):
  def build(seed, **options):
    return build_dataset("cifar10_4k", num_labeled=20, num_validation=10, batch_size=5, seed=seed,
                         augment_ops=["Brightness"], **options)

  a, b, c = build(2, two_views=False), build(2), build(3)
  (_, _), x_u = next(iter(a.train))
  assert x_u.shape == (5, 32, 32, 3)  # one unlabeled view
  batches_a, batches_b = iter(a.labeled), iter(b.labeled)
  for _ in range(6):  # seeded shuffles: the same label order, batch after batch, across epochs (20 labels)
    np.testing.assert_array_equal(next(batches_a)[1].numpy(), next(batches_b)[1].numpy())
  assert a.split_digest == b.split_digest != c.split_digest
  assert a.split_name == "cifar10_4k@20.val10.seed2"


@pytest.mark.parametrize("name, tfds_name, hint", [
    ("cifar10_4k", "cifar10", "tfds build cifar10"),
    ("svhn_1k", "svhn_cropped", "tfds build svhn_cropped"),
    ("imagenet_10pct", "imagenet2012", "downloads/manual"),
])
def test_unprepared_dataset_fails_fast_with_instructions(tmp_path, name, tfds_name, hint):
  start = time.time()
  with pytest.raises(DatasetNotPreparedError) as error:
    build_dataset(name, data_dir=str(tmp_path))
  assert time.time() - start < 30  # no download retries
  message = str(error.value)
  assert f"'{tfds_name}' is not prepared in {tmp_path}" in message and hint in message
