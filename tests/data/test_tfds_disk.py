"""TFDS sources on generated datasets written to disk (`tools/generated_tfds.py`), where mock data cannot go:
the real feature specs on files, and training streams whose checkpoint holds a position, not examples."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mpl_tf.data import build_dataset, tfds_source
from mpl_tf.data.sources import window_shuffled
from tests.conftest import ROOT, resumes_at_the_same_element

sys.path.insert(0, os.path.join(ROOT, "tools"))
import generated_tfds  # pylint: disable=wrong-import-position

# name: (stored image bytes start with, image shape, classes, splits)
REAL = {
    "svhn_cropped": (b"\x89PNG", (32, 32, 3), 10, {"train", "test", "extra"}),
    "cifar10": (b"\x89PNG", (32, 32, 3), 10, {"train", "test"}),
    "imagenet2012": (b"\xff\xd8", (None, None, 3), 1000, {"train", "validation"}),  # JPEG
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  generated_tfds.write(path, scale=0.5)
  return path


@pytest.mark.parametrize("name", sorted(REAL))
def test_generated_files_have_the_real_features_and_split_names(data_dir, name):
  magic, shape, classes, split_names = REAL[name]
  builder = tfds.builder(name, data_dir=data_dir)
  assert builder.is_prepared() and str(builder.version) == str(tfds.builder_cls(name).VERSION)
  features = builder.info.features
  assert features["image"].shape == shape
  assert features["label"].num_classes == classes and set(builder.info.splits) == split_names
  files = os.listdir(builder.data_dir)
  assert any(f.startswith(f"{name}-train.tfrecord") for f in files)
  example = next(iter(tfds.load(name, split="train", data_dir=data_dir, download=False)))
  assert example["image"].dtype == tf.uint8 and example["image"].shape[-1] == 3
  assert 0 <= int(example["label"]) < classes
  stored = next(iter(tfds.load(name, split="train", data_dir=data_dir, download=False,
                               decoders={"image": tfds.decode.SkipDecoding()})))
  assert stored["image"].numpy().startswith(magic)


def _equal(a, b):
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(x.numpy(), y.numpy())


@pytest.mark.parametrize("name, in_memory", [("cifar10", True), ("cifar10", False), ("svhn_cropped", False),
                                             ("imagenet2012", False)])
def test_source_streams_resume_at_the_same_example_from_a_checkpoint_of_positions(data_dir, name, in_memory,
                                                                                   monkeypatch):
  if not in_memory:  # read from disk every epoch and permuted in windows
    monkeypatch.setattr(tfds_source, "CACHE_LIMIT", 0)
  source = tfds_source.TfdsSource(name, data_dir=data_dir, test_split=None)
  pool = np.arange(len(source.pool_labels))
  labeled, unlabeled = pool[::3], pool if name == "imagenet2012" else np.setdiff1d(pool, pool[::3])
  # past an epoch of the labeled set (50 examples) and into a later window of 16
  size = resumes_at_the_same_element(source.labeled_stream(labeled, seed=1, shuffle_buffer=16), 70, 40, _equal)
  assert size < 20_000
  size = resumes_at_the_same_element(source.unlabeled_stream(unlabeled, seed=2, shuffle_buffer=16), 170, 40, _equal)
  # SVHN: two streams (train and extra) and the chooser's position; a whole split (ImageNet here, SVHN's extra) is
  # read as FILE_PARTS parts in a reshuffled order, each part's reader a few kB of state.
  assert size < 60_000
  assert int(source.examples(labeled).cardinality()) == len(labeled)  # Keras' evaluate needs it


@pytest.mark.parametrize("name", ["cifar10_4k", "imagenet_10pct"])
def test_the_training_batches_resume_bit_for_bit(data_dir, name):
  """The whole MPL pipeline (decoding, ImageNet's random resized crops, both views, batching, prefetch): after a
  restore every tensor of every batch equals the uninterrupted stream's: the draws are stateless, so the
  iterator's symbolic checkpoint (a position) is all there is to save."""
  split = dict(image_size=32) if name == "imagenet_10pct" else dict(num_labeled=40, num_validation=10)
  data = build_dataset(name, batch_size=4, uda_ratio=2, seed=0, data_dir=data_dir, **split)
  shapes = []

  def same_batches(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
      np.testing.assert_array_equal(x.numpy(), y.numpy())
    shapes.append(b[1][0].shape)

  assert resumes_at_the_same_element(data.train, 13, 12, same_batches) < 20_000
  assert shapes[0] == (8, 32, 32, 3)


def test_window_shuffle_permutes_each_window_and_depends_only_on_the_seed():
  stream = tf.data.Dataset.range(12).repeat()

  def first(seed, count=36):
    return [int(x) for x in window_shuffled(stream, 4, seed).take(count)]

  a = first(3)
  assert a == first(3) and a != first(4)
  for k in range(0, 36, 4):  # window k holds the k-th four inputs, reordered
    assert sorted(a[k:k + 4]) == [(k + i) % 12 for i in range(4)]
  assert a[:12] != list(range(12)) and a[:12] != a[12:24]  # reordered, and differently in every epoch
  with pytest.raises(ValueError, match="window"):
    window_shuffled(stream, 0, 1)


def test_window_shuffle_of_images_of_varying_sizes_keeps_each_whole_and_resumes():
  """Decoded JPEGs of any size (Reduced MPL zips decoded images with their stored predictions): the window is a
  ragged batch, and each image leaves it dense, whole and unpadded, next to its own label."""
  def image(i):
    return tf.fill(tf.stack([5 + i % 3, 4 + i % 2, 3]), tf.cast(i, tf.uint8)), tf.cast(i, tf.int32)

  stream = tf.data.Dataset.range(12).map(image).repeat()
  shuffled = window_shuffled(stream, 4, seed=5)
  assert shuffled.element_spec[0] == tf.TensorSpec((None, None, 3), tf.uint8)
  order = []
  for x, y in shuffled.take(24):
    i = int(y)
    assert x.shape == (5 + i % 3, 4 + i % 2, 3) and np.all(x.numpy() == i)
    order.append(i)
  for k in range(0, 24, 4):
    assert sorted(order[k:k + 4]) == [(k + i) % 12 for i in range(4)]
  assert order[:12] != list(range(12))
  assert resumes_at_the_same_element(shuffled, 7, 9, _equal) < 20_000
