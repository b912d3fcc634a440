"""The big teacher's stored predictions (Reduced MPL, paper Appendix E) and the dataset that serves them.

Reduced MPL trains a big teacher first, computes its probabilities once on the clean labeled, unlabeled and test
images, frees it, and then trains a small reduced teacher over those probabilities together with the student
(`mpl_tf.algorithms.reduced_mpl`). This module is the data side of that: what is stored
(`StoredPredictions`, `workdir/predictions/big_teacher.npz`), on which raw examples (`DatasetInputs`), and
the training stream of phase 3, built by the same `pipeline.train_dataset` as every other method's, with each
image's stored prediction carried through the shuffle, augmentation and batching next to it:

  ((x_l, y_l, p_l), (x_u, p_u))
    x_l  [B, H, W, C]  labeled images, weak view, [0, 1]      the student's labeled loss before/after its step
    y_l  [B] int32     their labels                            T_R's supervised loss and the student's feedback
    p_l  [B, K]        T's stored probabilities on x_l         T_R's supervised loss CE(y_l, T_R(p_l))
    x_u  [U, H, W, C]  unlabeled images, strong view, [0, 1]   the student trains on them
    p_u  [U, K]        T's stored probabilities on x_u         pseudo labels y_hat ~ softmax(T_R(p_u))
The predictions are of the un-augmented image, so every view of an image is labeled from its one stored
prediction (the paper pre-computes "all target distributions for the student's training data").
"""
import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from mpl_tf.data import pipeline, sources, splits
from mpl_tf.data.folder_source import FolderSource


@dataclasses.dataclass
class StoredPredictions:
  """The big teacher's probabilities, computed once (phase 2) and all that is kept of it.

  Attributes:
    labeled, unlabeled: [N, K] float32 probabilities on the labeled / unlabeled training images, in the order
      of `labeled_indices` / `unlabeled_indices` (indices into the source, see `DatasetInputs`).
    test: [N_test, K] probabilities on the test set, in its order, and `test_labels` [N_test]: to score T_R.
    split_digest: the split they were computed on (checked when loaded into a run).
  """
  labeled: np.ndarray
  unlabeled: np.ndarray
  test: np.ndarray
  test_labels: np.ndarray
  labeled_indices: np.ndarray
  unlabeled_indices: np.ndarray
  split_digest: str

  @property
  def big_teacher_accuracy(self) -> float:
    return float(np.mean(np.argmax(self.test, -1) == self.test_labels))

  def save(self, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})
    os.replace(tmp, path)  # a kill mid-write leaves no half file that a resume would trust

  @classmethod
  def load(cls, path: str, split_digest: Optional[str] = None) -> "StoredPredictions":
    with np.load(path, allow_pickle=False) as f:
      stored = cls(**{field.name: f[field.name] for field in dataclasses.fields(cls)})
    stored.split_digest = str(stored.split_digest)
    if split_digest is not None and stored.split_digest != split_digest:
      raise ValueError(f"{path} holds predictions for split {stored.split_digest}, this run uses {split_digest}: "
                       "use another workdir")
    return stored


@dataclasses.dataclass(frozen=True)
class DatasetInputs:
  """What stored predictions need from a dataset beyond its `DatasetBundle`: the raw examples and their views.

  Attributes:
    labeled: finite `(image, label)` dataset of the labeled examples, in the order of `labeled_indices`.
    unlabeled: finite `(image, label)` dataset of the unlabeled examples (labels unused; -1 for extra ones), in
      the order of `unlabeled_indices`.
    labeled_indices, unlabeled_indices: source indices (unlabeled: the split's, then the extra examples').
    views: the dataset's weak / strong / finish functions; prepare: its per-example preparation.
    split_digest: fingerprint of the split, equal to the bundle's.
  """
  labeled: tf.data.Dataset
  unlabeled: tf.data.Dataset
  labeled_indices: np.ndarray
  unlabeled_indices: np.ndarray
  views: object
  prepare: object
  split_digest: str


def dataset_inputs(bundle) -> DatasetInputs:
  """The raw labeled and unlabeled examples behind `bundle`'s training streams, each once, with the views and
  preparation those streams use (`bundle.raw`, made by `build_dataset`): what the big teacher's predictions
  are computed on and zipped with. `DatasetBundle` itself hands out augmented, shuffled streams only.
  """
  raw = bundle.raw
  if raw is None:
    raise ValueError(f"reduced_mpl needs an image dataset with random access to its examples, not {bundle.name!r}")
  source, split = raw.source, raw.split
  labeled_indices = np.asarray(split.labeled, np.int64)
  unlabeled_indices = np.asarray(split.unlabeled, np.int64)
  if source.num_extra_unlabeled:
    if not isinstance(source, (sources.ArraySource, FolderSource)):  # extra examples follow the pool's indices
      raise ValueError(f"{bundle.name}: stored predictions for extra unlabeled data are only supported for "
                       "in-memory and folder sources")
    first = len(source.pool_labels)
    unlabeled_indices = np.concatenate([unlabeled_indices, np.arange(first, first + source.num_extra_unlabeled)])
  return DatasetInputs(
      labeled=source.examples(labeled_indices), unlabeled=source.examples(unlabeled_indices),
      labeled_indices=labeled_indices, unlabeled_indices=unlabeled_indices, views=raw.views, prepare=raw.prepare,
      split_digest=bundle.split_digest)


def predict_probabilities(network, batches) -> np.ndarray:
  """softmax(network(x)) in inference mode over an iterable of [N, ...] image batches in [0, 1], concatenated."""
  predict = tf.function(lambda x: tf.nn.softmax(tf.cast(network(x, training=False), tf.float32), axis=-1),
                        reduce_retracing=True)
  parts = [predict(x).numpy() for x in batches]
  return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, network.output_shape[-1]), np.float32)


def store_predictions(network, inputs: DatasetInputs, test: tf.data.Dataset,
                      batch_size: int = 256) -> StoredPredictions:
  """Phase 2: the big teacher's probabilities on the clean labeled, unlabeled and test images, once each.

  Training images get the evaluation treatment (`finish`, no augmentation); `test` is the bundle's
  finite `(x, y)` test batches, already finished.
  """
  def clean(examples):
    return examples.map(lambda x, y: inputs.views.finish(inputs.prepare(x))).batch(batch_size)

  test_x, test_y = [], []
  for x, y in test:
    test_x.append(x)
    test_y.append(y.numpy())
  return StoredPredictions(
      labeled=predict_probabilities(network, clean(inputs.labeled)),
      unlabeled=predict_probabilities(network, clean(inputs.unlabeled)),
      test=predict_probabilities(network, test_x), test_labels=np.concatenate(test_y).astype(np.int32),
      labeled_indices=inputs.labeled_indices, unlabeled_indices=inputs.unlabeled_indices,
      split_digest=inputs.split_digest)


def stored_prediction_dataset(inputs: DatasetInputs, stored: StoredPredictions, *, batch_size: int,
                              unlabeled_batch_size: int, seed: int, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
  """Phase 3's infinite training dataset of `((x_l, y_l, p_l), (x_u, p_u))` elements (module docstring).

  Each raw example is zipped with its stored prediction *before* the shuffle, so the pair stays together. The
  position in the stream is a counter, so a (symbolic) checkpoint of it holds no buffered images. The
  streams then go through `pipeline.train_dataset` (labeled: weak view; unlabeled: strong view, one view, as
  MPL's student sees them), which carries the predictions through untouched.
  """
  if not (np.array_equal(stored.labeled_indices, inputs.labeled_indices)
          and np.array_equal(stored.unlabeled_indices, inputs.unlabeled_indices)):
    raise ValueError("the stored predictions were computed on other examples than these inputs")

  def stream(examples, probabilities, name):
    # Zipped first, then permuted in windows (`sources.window_shuffled`): a set of up to `shuffle_buffer` examples
    # is one window, fully reshuffled every epoch; a larger one is permuted window by window in its examples'
    # order, as far as a shuffle buffer of that size would move it. Not `shuffle()`: its buffer of decoded images
    # went into every checkpoint of the run (BENCHMARKS.md, "Checkpoint sizes") and its reshuffle seeds are
    # shared by all iterators of the dataset, so a mesh's readers saw different orders.
    ds = tf.data.Dataset.zip((examples, tf.data.Dataset.from_tensor_slices(probabilities)))
    return sources.window_shuffled(ds.repeat(), max(1, min(len(probabilities), shuffle_buffer)),
                                   splits.derived_seed(seed, name))

  labeled = stream(inputs.labeled, stored.labeled, "labeled").map(lambda xy, p: (xy[0], xy[1], p))
  unlabeled = stream(inputs.unlabeled, stored.unlabeled, "unlabeled").map(lambda xy, p: (xy[0], p))
  return pipeline.train_dataset(labeled, unlabeled, batch_size=batch_size, unlabeled_batch_size=unlabeled_batch_size,
                                views=inputs.views, seed=seed, prepare=inputs.prepare, two_views=False,
                                unlabeled_view="strong")


class PredictionStore:
  """A run's big-teacher predictions (`workdir/predictions/big_teacher.npz`): whether they exist, storing them
  from the trained big teacher, loading them (checked against the run's split), and the MPL phase's dataset over
  them. The raw examples are read from the bundle on first use: a dataset without them fails there."""

  def __init__(self, bundle, workdir: str, seed: int):
    self.bundle, self.seed = bundle, seed
    self.path = os.path.join(workdir, "predictions", "big_teacher.npz")
    self._inputs = None

  def _raw_inputs(self) -> DatasetInputs:
    if self._inputs is None:
      self._inputs = dataset_inputs(self.bundle)
    return self._inputs

  def exists(self) -> bool:
    self._raw_inputs()
    return os.path.exists(self.path)

  def store(self, network) -> None:
    store_predictions(network, self._raw_inputs(), self.bundle.test).save(self.path)

  def load(self) -> StoredPredictions:
    return StoredPredictions.load(self.path, self.bundle.split_digest)

  def dataset(self, stored: StoredPredictions) -> tf.data.Dataset:
    return stored_prediction_dataset(self._raw_inputs(), stored, batch_size=self.bundle.batch_size,
                                     unlabeled_batch_size=self.bundle.unlabeled_batch_size, seed=self.seed)
