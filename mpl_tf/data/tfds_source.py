"""TensorFlow Datasets as a `Source`: svhn_cropped, cifar10, imagenet2012, read offline from a prepared copy.

Nothing is ever downloaded: datasets are loaded with `download=False`, and a missing one fails at once with a
`DatasetNotPreparedError` that says how to prepare it (TFDS's `download=True` retries for minutes on a machine
without internet). The pool split is addressed by position: one pass reads every label (the image bytes are
not decoded, and on a prepared dataset the labels are cached beside it as .npy), then a subset is read back by
enumerating the split in its fixed file order and keeping the wanted positions.

The training streams are shuffled while the images are still encoded and decoded after, in a parallel map, and
in a way whose checkpoint holds positions, not examples (the trainer checkpoints its data iterator; a `shuffle`
buffer of ImageNet JPEGs would put about 1 GB into every checkpoint):
  - a subset of the pool small enough (`CACHE_LIMIT` examples, `MEMORY_LIMIT_BYTES`) is read once into memory,
    still encoded, and streamed as `sources.shuffled_indices` streams arrays: fully reshuffled every epoch;
  - a larger one, a whole split (ImageNet's unlabeled train) and an extra split (SVHN's `extra`) are read from
    disk every epoch and permuted in windows of `shuffle_buffer` examples (`sources.window_shuffled`); whole
    and extra splits are read as `FILE_PARTS` even parts whose order is reshuffled every epoch
    (`_reshuffled_parts`).
No stream draws from a stateful random op (TFDS's own `shuffle_files` does, and so does
`sample_from_datasets`): every order is a stateless permutation of (seed, epoch), so every reader of a mesh
reads the same order and a symbolic checkpoint of a stream is its positions.
"""
import logging
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mpl_tf.data.sources import Source, shuffled_indices, window_shuffled

log = logging.getLogger(__name__)

# A subset of the pool of at most this many examples and bytes is held in memory, still encoded (CIFAR-10's
# 41k unlabeled PNGs, ~100 MB); a larger one is re-read from disk each epoch (ImageNet-10%'s 128k labeled images,
# SVHN's 72k unlabeled train images).
CACHE_LIMIT = 50_000
FILE_PARTS = 8  # a whole split is read in this many parts, their order reshuffled every epoch
MEMORY_LIMIT_BYTES = 256 * 2**20

_PREPARE_HINTS = {
    "imagenet2012": (
        "ImageNet needs a manual download: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
        "<data_dir>/downloads/manual/ and run `tfds build imagenet2012 --data_dir=<data_dir>`"),
}


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not on disk; the message says how to prepare it."""


def _not_prepared(name: str, data_dir: Optional[str]) -> DatasetNotPreparedError:
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  how = _PREPARE_HINTS.get(name, (
      f"on a machine with internet run `tfds build {name} --data_dir=<data_dir>` (or "
      f"`tfds.builder('{name}', data_dir=...).download_and_prepare()`) and copy <data_dir>/{name} here"))
  return DatasetNotPreparedError(
      f"TFDS dataset '{name}' is not prepared in {where}, and this code never downloads. {how}; then pass "
      f"data_dir=<data_dir> (gin: build_dataset.data_dir) or set TFDS_DATA_DIR. For an offline run use the "
      "'digits' dataset.")


def _stateless_choices(sizes: Sequence[int], seed: int) -> tf.data.Dataset:
  """Infinite stream of part indices, part k with probability sizes[k] / sum(sizes), element i drawn from
  stateless_uniform(seed=(seed, i)): what `sample_from_datasets` does, without its stateful generator."""
  cumulative = tf.constant(np.cumsum(sizes) / np.sum(sizes), tf.float32)
  base = tf.constant(int(seed), tf.int64)

  def choose(i):
    u = tf.random.stateless_uniform([], seed=tf.stack([base, i]))
    return tf.minimum(tf.reduce_sum(tf.cast(cumulative <= u, tf.int64)), len(sizes) - 1)

  return tf.data.Dataset.counter().map(choose)


class TfdsSource(Source):
  """A TFDS image classification dataset with features `image` and `label`.

  Args:
    name: the TFDS name, e.g. "cifar10".
    pool_split: the split to draw labeled, validation and unlabeled examples from.
    extra_splits: splits used whole as extra unlabeled data (SVHN: ("extra",)).
    test_split: the split used as test set, or None.
    data_dir: TFDS data directory (None: TFDS's default / $TFDS_DATA_DIR).
    cache_labels: cache the label column of prepared splits as .npy beside the data.
  """

  def __init__(self, name: str, *, pool_split: str = "train", extra_splits: Sequence[str] = (),
               test_split: Optional[str] = "test", data_dir: Optional[str] = None, cache_labels: bool = True):
    self.name = name
    self._data_dir = data_dir
    self._builder = tfds.builder(name, data_dir=data_dir)
    features = self._builder.info.features
    self._image_feature = features["image"]
    self.num_classes = int(features["label"].num_classes)
    self.class_names = tuple(features["label"].names)
    shape = tuple(self._image_feature.shape)
    self.image_shape = shape if all(d is not None for d in shape) else None
    self._pool_split = pool_split
    self._extra_splits = tuple(extra_splits)
    self._test_split = test_split
    self._cache_labels = cache_labels
    self._memory = {}
    self.pool_labels = self.labels(pool_split)
    self._extra_sizes = [self._num_examples(s) for s in self._extra_splits]
    self.num_extra_unlabeled = int(sum(self._extra_sizes))
    self.num_test = self._num_examples(test_split) if test_split else 0

  def _load(self, split) -> tf.data.Dataset:
    """The split (a name or a `tfds.even_splits` part) as dicts with the image still encoded, in file order."""
    read_config = tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False)
    try:
      return tfds.load(self.name, split=split, data_dir=self._data_dir, download=False, shuffle_files=False,
                       read_config=read_config, decoders={"image": tfds.decode.SkipDecoding()})
    except AssertionError as e:  # what tfds.load raises when the data is missing and download=False
      # Load first, explain after: under `tfds.testing.mock_data` `tfds.load(download=False)` works while
      # `is_prepared()` is False, so asking `is_prepared()` first would refuse the mock data the tests use.
      if not self._builder.is_prepared():
        raise _not_prepared(self.name, self._data_dir) from e
      raise

  def _num_examples(self, split: str) -> int:
    info = self._builder.info.splits
    if split in info:
      return int(info[split].num_examples)
    cardinality = int(self._load(split).cardinality())
    return cardinality if cardinality >= 0 else len(self.labels(split))

  def _cache_path(self, split: str) -> Optional[str]:
    if not self._cache_labels or not self._builder.is_prepared():  # never cache mock or partial data
      return None
    return os.path.join(self._builder.data_dir, f"mpl_tf_labels.{split}.npy")

  def labels(self, split: str) -> np.ndarray:
    """The label of every example of `split`, in file order (read once, then cached if possible)."""
    path = self._cache_path(split)
    if path and os.path.exists(path):
      labels = np.load(path)
      if split in self._builder.info.splits and len(labels) == self._builder.info.splits[split].num_examples:
        return labels
    batches = self._load(split).map(lambda e: e["label"]).batch(8192).prefetch(2)
    labels = np.concatenate([b.numpy() for b in batches] or [np.zeros(0, np.int64)]).astype(np.int64)
    if path:
      try:
        np.save(path, labels)
      except OSError as e:
        log.warning("could not cache %s labels at %s: %s", self.name, path, e)
    return labels

  def _decode(self, image: tf.Tensor) -> tf.Tensor:
    image = self._image_feature.decode_example(image)
    if self.image_shape is not None:
      image = tf.ensure_shape(image, self.image_shape)
    return image

  def _subset(self, indices: np.ndarray) -> tf.data.Dataset:
    """Encoded `(image, label)` of the pool examples at `indices`, in file order."""
    mask = np.zeros(len(self.pool_labels), bool)
    mask[np.asarray(indices, np.int64)] = True
    mask = tf.constant(mask)
    ds = self._load(self._pool_split).enumerate()
    ds = ds.filter(lambda i, e: tf.gather(mask, i))
    return ds.map(lambda i, e: (e["image"], tf.cast(e["label"], tf.int32)))

  def examples(self, indices: np.ndarray) -> tf.data.Dataset:
    decode = self._decode
    # The filter hides the size, which Keras' evaluate needs with steps_per_execution > 1: state it.
    ds = self._subset(indices).apply(tf.data.experimental.assert_cardinality(len(indices)))
    return ds.map(lambda x, y: (decode(x), y), num_parallel_calls=tf.data.AUTOTUNE)

  def _fits_in_memory(self, indices: np.ndarray) -> bool:
    """Whether the encoded pool examples at `indices` are few and small enough to hold in memory."""
    if len(indices) > CACHE_LIMIT:
      return False
    split = self._builder.info.splits.get(self._pool_split) if self._builder.info.splits else None
    if split is None or not split.num_examples or not split.num_bytes:
      return True  # under mock data: no sizes recorded, and a count within CACHE_LIMIT
    return len(indices) * split.num_bytes / split.num_examples <= MEMORY_LIMIT_BYTES

  def _in_memory(self, indices: np.ndarray):
    """`(encoded images, labels)` of the pool examples at `indices` in file order, read once per index set."""
    key = np.asarray(indices, np.int64).tobytes()
    if key not in self._memory:
      images, labels = [], []
      for x, y in self._subset(indices).batch(4096):
        images.extend(x.numpy())
        labels.append(y.numpy())
      labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
      self._memory[key] = (np.array(images, dtype=object), labels)  # the labeled set serves MPL and finetuning
    return self._memory[key]

  def _stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int, with_labels: bool) -> tf.data.Dataset:
    """Infinite, shuffled encoded `(image, label)` or `image` stream of the pool examples at `indices`."""
    if self._fits_in_memory(indices):  # full reshuffle every epoch, position = a counter
      images, labels = self._in_memory(indices)
      images, labels = tf.constant(images, tf.string), tf.constant(labels, tf.int32)
      order = shuffled_indices(np.arange(len(labels)), seed)
      if with_labels:
        return order.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))
      return order.map(lambda i: tf.gather(images, i))
    if len(indices) == len(self.pool_labels) and not with_labels:  # the whole split: reshuffled parts
      ds = self._reshuffled_parts(self._pool_split, seed)
    else:
      ds = self._subset(indices)
      if not with_labels:
        ds = ds.map(lambda x, y: x)
    return window_shuffled(ds.repeat(), max(1, min(shuffle_buffer, len(indices))), seed)

  def labeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    decode = self._decode
    return self._stream(indices, seed, shuffle_buffer, with_labels=True).map(
        lambda x, y: (decode(x), y), num_parallel_calls=tf.data.AUTOTUNE)

  def unlabeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    parts, sizes = [], []
    if len(indices):
      parts.append(self._stream(indices, seed, shuffle_buffer, with_labels=False))
      sizes.append(len(indices))
    for k, (split, size) in enumerate(zip(self._extra_splits, self._extra_sizes)):
      extra = self._reshuffled_parts(split, seed + 1 + k)
      parts.append(window_shuffled(extra, max(1, min(shuffle_buffer, size)), seed + 7 * (k + 1)))
      sizes.append(size)
    if not parts or not sum(sizes):
      raise ValueError(f"{self.name}: no unlabeled examples")
    if len(parts) == 1:
      ds = parts[0]
    else:  # draw from the parts in proportion to their sizes, so SVHN's extra is mixed with train throughout
      ds = tf.data.Dataset.choose_from_datasets(parts, _stateless_choices(sizes, seed))
    return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

  def _reshuffled_parts(self, split: str, seed: int) -> tf.data.Dataset:
    """An infinite stream of a whole split's encoded images: in epoch e its `FILE_PARTS` even parts (each in file
    order) follow one another in the permutation index_shuffle(seed=(seed, e)) (TFDS's `shuffle_files`, which
    this replaces, reshuffled its files with a stateful seed generator)."""
    names = tfds.even_splits(split, n=FILE_PARTS)
    sizes = [self._num_examples(name) for name in names]
    parts = [self._load(name).map(lambda e: e["image"]).repeat() for name in names]
    table = tf.constant(sizes, tf.int64)
    base = tf.constant(int(seed), tf.int64)

    def epoch_choices(e):
      order = tf.random.experimental.index_shuffle(tf.range(len(sizes), dtype=tf.int64), seed=tf.stack([base, e]),
                                                   max_index=len(sizes) - 1)
      return tf.data.Dataset.from_tensor_slices(tf.repeat(order, tf.gather(table, order)))

    return tf.data.Dataset.choose_from_datasets(parts, tf.data.Dataset.counter().flat_map(epoch_choices))

  def test_examples(self) -> Optional[tf.data.Dataset]:
    if not self._test_split:
      return None
    decode = self._decode
    ds = self._load(self._test_split)
    return ds.map(lambda e: (decode(e["image"]), tf.cast(e["label"], tf.int32)),
                  num_parallel_calls=tf.data.AUTOTUNE)
