"""Views as a pure function of (run seed, stream, position): the same batches on every build, whatever the
parallelism; one example's views recomputed alone equal its row of the batch; no stateful random op anywhere
in a recipe's training pipeline; a mid-stream iterator checkpoint restores the same batches."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry  # pylint: disable=g-direct-tensorflow-import

from mpl_tf.data import build_dataset, pipeline, splits
from mpl_tf.data.stored_predictions import StoredPredictions, dataset_inputs, stored_prediction_dataset
from tests.conftest import ROOT, resumes_at_the_same_element

sys.path.insert(0, os.path.join(ROOT, "tools"))
import generated_tfds  # pylint: disable=wrong-import-position

SMALL = dict(batch_size=4, uda_ratio=2, seed=3)
# What the generated files (300 training examples) can split, as tools/checkpoint_sizes.py's recipes.
TFDS_SPLITS = {"svhn_1k": dict(num_labeled=20), "cifar10_4k": dict(num_labeled=20, num_validation=10),
               "imagenet_10pct": dict(image_size=32)}


def _npz(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "own.npz")
  np.savez(path, x_train=rng.integers(0, 256, (60, 12, 12, 1), dtype=np.uint8), y_train=np.arange(60) % 3,
           x_test=rng.integers(0, 256, (9, 12, 12, 1), dtype=np.uint8), y_test=np.arange(9) % 3)
  return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  generated_tfds.write(path)
  return path


def _recipe(name, tmp_path, data_dir, **overrides):
  """build_dataset for a recipe with small batches; own data on a generated .npz, TFDS on generated files."""
  kwargs = dict(SMALL, **overrides)
  if name == "npz":
    return build_dataset("npz", path=_npz(tmp_path), num_labeled=15, **kwargs)
  if name in TFDS_SPLITS:
    return build_dataset(name, data_dir=data_dir, **TFDS_SPLITS[name], **kwargs)
  return build_dataset(name, **kwargs)


def _take(dataset, count):
  it = iter(dataset)
  return [tf.nest.map_structure(lambda t: t.numpy(), next(it)) for _ in range(count)]


def _assert_equal_batches(a, b):
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(x, y)


def _ops(dataset):
  """Every op type in the dataset's graph, functions included."""
  graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())  # pylint: disable=protected-access
  types = {node.op for node in graph.node}
  for function in graph.library.function:
    types |= {node.op for node in function.node_def}
  return types


def _stateful_random(types):
  random_words = ("Random", "Rng", "Multinomial", "Shuffle", "Generator", "Seed")
  return sorted(t for t in types if any(w in t for w in random_words) and op_def_registry.get(t).is_stateful)


RECIPES = ["digits", "npz", "svhn_1k", "cifar10_4k", "imagenet_10pct", "two_moons"]


@pytest.mark.parametrize("name", RECIPES)
def test_no_stateful_random_op_in_any_training_pipeline(name, tmp_path, data_dir):
  data = _recipe(name, tmp_path, data_dir)
  for dataset in (data.train, data.labeled):
    types = _ops(dataset)
    assert "StatelessRandomUniformV2" in types or name == "two_moons"  # the draws are there...
    assert not _stateful_random(types), _stateful_random(types)  # ...and nothing stateful
  # The check itself can fire: on the ops the views used before (tf.random.uniform, keras-cv's generators).
  assert _stateful_random({"RandomUniform", "RngReadAndSkip", "StatelessRandomUniformV2"}) == [
      "RandomUniform", "RngReadAndSkip"]


def test_the_stored_prediction_stream_has_no_stateful_random_op(tmp_path):
  data = build_dataset("npz", path=_npz(tmp_path), num_labeled=15, **SMALL)
  inputs = dataset_inputs(data)
  stored = StoredPredictions(
      labeled=np.full((len(inputs.labeled_indices), 3), 1 / 3, np.float32),
      unlabeled=np.full((len(inputs.unlabeled_indices), 3), 1 / 3, np.float32), test=np.zeros((0, 3), np.float32),
      test_labels=np.zeros(0, np.int32), labeled_indices=inputs.labeled_indices,
      unlabeled_indices=inputs.unlabeled_indices, split_digest=inputs.split_digest)
  stream = stored_prediction_dataset(inputs, stored, batch_size=4, unlabeled_batch_size=8, seed=3)
  assert not _stateful_random(_ops(stream))
  _assert_equal_batches(_take(stream, 3), _take(stored_prediction_dataset(
      inputs, stored, batch_size=4, unlabeled_batch_size=8, seed=3), 3))


@pytest.mark.parametrize("name", ["digits", "npz", "imagenet_10pct"])
def test_same_seed_same_batches_whatever_the_parallelism(name, tmp_path, data_dir):
  reference = _take(_recipe(name, tmp_path, data_dir).train, 4)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  serial = _take(_recipe(name, tmp_path, data_dir).train.with_options(options), 4)
  _assert_equal_batches(reference, serial)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 8
  _assert_equal_batches(reference, _take(_recipe(name, tmp_path, data_dir).train.with_options(options), 4))
  other_seed = _take(_recipe(name, tmp_path, data_dir, seed=4).train, 1)
  assert not np.array_equal(other_seed[0][1][1], reference[0][1][1])


def test_one_example_recomputed_alone_equals_its_row_of_the_batch():
  """Unlabeled example k of the stream, prepared and augmented by itself from the seed (derived key, k), is row
  k of the first unlabeled batch in both views: a view does not depend on the batch, reader or worker."""
  data = build_dataset("digits", **SMALL)
  (_, _), (weak_batch, strong_batch) = _take(data.train, 1)[0]
  raw = data.raw
  stream = raw.source.unlabeled_stream(raw.split.unlabeled, splits.derived_seed(3, "unlabeled"), 0)
  key = splits.derived_seed(3, "views/train/unlabeled")
  for k, image in enumerate(stream.take(len(weak_batch))):
    seed = pipeline.example_seed(tf.constant(key, tf.int64), tf.constant(k, tf.int64))
    draw_seed, crop_seed = pipeline._split_seed(seed)  # pylint: disable=protected-access
    x = raw.prepare(image, crop_seed)[None]
    draws = raw.views.draws(draw_seed)[None]
    weak = raw.views.weak(x, draws)
    np.testing.assert_array_equal(raw.views.finish(weak).numpy()[0], weak_batch[k])
    np.testing.assert_array_equal(raw.views.finish(raw.views.strong(weak, draws)).numpy()[0], strong_batch[k])


@pytest.mark.parametrize("name", ["digits", "npz"])
def test_a_mid_stream_checkpoint_restores_the_same_batches(name, tmp_path):
  data = _recipe(name, tmp_path, None)
  resumes_at_the_same_element(data.train, 7, 5, _assert_equal_batches)
  resumes_at_the_same_element(data.labeled, 7, 5, _assert_equal_batches)
