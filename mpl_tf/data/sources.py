"""Where examples come from: one interface over in-memory arrays, scikit-learn's digits and .npz files.

A `Source` is a *pool* of labeled examples (which `splits.make_split` divides into labeled / validation /
held-out test / unlabeled), optional *extra* unlabeled examples (SVHN's `extra`, a folder of unlabeled images,
`x_unlabeled` of a .npz), and optional *test* examples of its own. It hands out `tf.data` datasets of
`(image, label)` with images in [0, 255] (uint8 or float32) in their stored shape; scaling, resizing and
augmentation are the pipeline's job. TFDS sources live in `tfds_source.py`, image folders (streamed from disk)
in `folder_source.py`.

Everything that can be wrong with a user's .npz is checked here, eagerly, with the file in the message:
labels outside [0, num_classes), images of mixed shapes, values out of range, missing arrays.
"""
import abc
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mpl_tf.data.splits import check_labels

log = logging.getLogger(__name__)

class Source(abc.ABC):
  """A pool of labeled examples, optional extra unlabeled examples and an optional test set.

  Attributes:
    name: for messages.
    num_classes: labels lie in [0, num_classes).
    pool_labels: int64 [N], the label of every pool example, in the order the indices refer to.
    image_shape: shape of one example, or None where it varies (ImageNet: the pipeline resizes).
    num_extra_unlabeled: number of extra unlabeled examples.
    num_test: size of the source's own test set (0 if it has none: hold one out of the pool).
    class_names: optional names of the classes.
  """
  name: str
  num_classes: int
  pool_labels: np.ndarray
  image_shape: Optional[Tuple[int, ...]]
  num_extra_unlabeled: int = 0
  num_test: int = 0
  class_names: Optional[Tuple[str, ...]] = None

  @abc.abstractmethod
  def examples(self, indices: np.ndarray) -> tf.data.Dataset:
    """Finite `(image, label)` dataset of the pool examples at `indices`, in index order."""

  @abc.abstractmethod
  def labeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """Infinite, shuffled (seeded) `(image, label)` dataset over the pool examples at `indices`."""

  @abc.abstractmethod
  def unlabeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """Infinite, shuffled `image` dataset over the pool examples at `indices` plus all extra examples."""

  def test_examples(self) -> Optional[tf.data.Dataset]:
    """Finite `(image, label)` dataset of the source's own test set, or None."""
    return None

  def test_labels(self) -> Optional[np.ndarray]:
    """The labels of the source's own test set when held in memory (not a streamed split's), else None."""
    return None

  def sample_images(self, count: int) -> Optional[List[np.ndarray]]:
    """Up to `count` pool images as arrays in [0, 255] (for image statistics), or None for streamed sources."""
    del count
    return None


class ArraySource(Source):
  """A source held in memory as numpy arrays (digits, .npz, two moons).

  Streams shuffle *indices* (a full reshuffle every epoch) and gather the examples, so the arrays are
  embedded in the `tf.data` graph once: keep them well under TensorFlow's 2 GB graph limit.
  """

  def __init__(self, name: str, x: np.ndarray, y: np.ndarray, num_classes: int, *,
               x_extra: Optional[np.ndarray] = None, x_test: Optional[np.ndarray] = None,
               y_test: Optional[np.ndarray] = None, class_names: Optional[Sequence[str]] = None):
    self.name = name
    self.num_classes = int(num_classes)
    self.pool_labels = check_labels(y, num_classes, f"{name} (training labels)")
    if len(x) != len(self.pool_labels):
      raise ValueError(f"{name}: {len(x)} training examples but {len(self.pool_labels)} labels")
    self.image_shape = tuple(int(d) for d in x.shape[1:])
    self._num_pool = len(x)
    parts = [x]
    if x_extra is not None and len(x_extra):
      _check_same_shape(name, "extra unlabeled", x_extra, self.image_shape)
      parts.append(x_extra.astype(x.dtype, copy=False))
    self.num_extra_unlabeled = sum(len(p) for p in parts[1:])
    self._x = np.concatenate(parts) if len(parts) > 1 else x
    self._y = np.concatenate([self.pool_labels, np.full(self.num_extra_unlabeled, -1, np.int64)])
    self._x_test, self._y_test = None, None
    if x_test is not None:
      _check_same_shape(name, "test", x_test, self.image_shape)
      self._y_test = check_labels(y_test, num_classes, f"{name} (test labels)")
      if len(x_test) != len(self._y_test):
        raise ValueError(f"{name}: {len(x_test)} test examples but {len(self._y_test)} test labels")
      self._x_test = x_test
      self.num_test = len(x_test)
    self.class_names = tuple(class_names) if class_names is not None else None

  def _gather(self, index_ds: tf.data.Dataset) -> tf.data.Dataset:
    x, y = tf.constant(self._x), tf.constant(self._y, tf.int32)
    return index_ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)

  def examples(self, indices: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((self._x[indices], self._y[indices].astype(np.int32)))

  def labeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    return self._gather(shuffled_indices(indices, seed))

  def unlabeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    extra = np.arange(self._num_pool, self._num_pool + self.num_extra_unlabeled)
    return self._gather(shuffled_indices(np.concatenate([indices, extra]), seed)).map(lambda x, y: x)

  def sample_images(self, count: int) -> Optional[List[np.ndarray]]:
    step = max(1, self._num_pool // max(1, count))
    return list(self._x[:self._num_pool:step][:count])

  def test_labels(self) -> Optional[np.ndarray]:
    return self._y_test

  def test_examples(self) -> Optional[tf.data.Dataset]:
    if self._x_test is None:
      return None
    return tf.data.Dataset.from_tensor_slices((self._x_test, self._y_test.astype(np.int32)))


def shuffled_indices(indices: np.ndarray, seed: int) -> tf.data.Dataset:
  """Infinite stream of `indices`, fully reshuffled every epoch: what in-memory and folder sources gather.

  Epoch e is the stateless permutation `index_shuffle(seed=(seed, e))`, a function of (`seed`, e) alone. Not
  `shuffle(seed=seed, reshuffle_each_iteration=True).repeat()`: that draws every epoch's seed from one
  seed-generator resource shared by all iterators of the dataset object, so two iterators of one dataset (a
  DTensor mesh's per-device readers, `mpl_tf/layout/inputs.py`) saw different orders, and a run's order depended
  on how many iterators had been made before. The position is a counter, so a checkpoint of the stream holds no
  shuffle buffer.
  """
  indices = np.asarray(indices, np.int64)
  if not indices.size:
    raise ValueError("cannot stream an empty set of examples")
  n = len(indices)
  table = tf.constant(indices)
  base = tf.constant(int(seed), tf.int64)

  def pick(i):
    position = tf.random.experimental.index_shuffle(i % n, seed=tf.stack([base, i // n]), max_index=n - 1)
    return tf.gather(table, position)

  return tf.data.Dataset.counter().map(pick)


def window_shuffled(examples: tf.data.Dataset, window: int, seed: int) -> tf.data.Dataset:
  """An infinite stream permuted within consecutive windows of `window` elements: for streams too big to hold.

  Window k (counted from the start of the stream, across epochs) is reordered by the stateless permutation
  `index_shuffle(seed=(seed, k))`, so the order is a function of `seed` and the input order alone. Unlike
  `shuffle(window)`, whose checkpoint holds its whole buffer (ImageNet: 10,000 encoded JPEGs, about 1 GB), a
  symbolic checkpoint of this stream (`tf.data.Options.experimental_symbolic_checkpoint`, as the trainer saves)
  holds only positions; a restore re-reads the current window. Each element moves only within its window, as it
  would move about a buffer's length in a shuffle: feed it an input that is already in random order (TFDS files
  are shuffled when prepared, and their order is reshuffled every epoch).

  Args:
    examples: an infinite dataset (repeat it first); its elements may be any structure, of any shapes.
    window: elements a window; they are held in memory together.
    seed: the permutations derive from it.
  """
  if window < 1:
    raise ValueError(f"window must be a positive integer, got {window!r}")
  base = tf.constant(int(seed), tf.int64)

  def permute(k, batch):
    order = tf.random.experimental.index_shuffle(tf.range(window, dtype=tf.int64), seed=tf.stack([base, k]),
                                                 max_index=window - 1)
    return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

  specs = tf.nest.flatten(examples.element_spec)
  if all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined() for s in specs):
    return examples.batch(window, drop_remainder=True).enumerate().map(permute).unbatch()
  # Elements of varying shapes (decoded JPEGs of any size): the window is a ragged batch, and every component
  # that came in dense leaves dense again (one element's rows are all of one length, so nothing is padded).
  dense = tf.nest.map_structure(lambda s: isinstance(s, tf.TensorSpec), examples.element_spec)

  def densify(*element):
    element = element[0] if len(element) == 1 else element
    return tf.nest.map_structure(lambda t, d: t.to_tensor() if d and isinstance(t, tf.RaggedTensor) else t,
                                 element, dense)

  return examples.ragged_batch(window, drop_remainder=True).enumerate().map(permute).unbatch().map(densify)


def _check_same_shape(name: str, what: str, x: np.ndarray, shape: Tuple[int, ...]):
  if tuple(x.shape[1:]) != tuple(shape):
    raise ValueError(f"{name}: {what} images have shape {tuple(x.shape[1:])}, training images {tuple(shape)}; "
                     "all images must have one shape")


def digits_source() -> ArraySource:
  """scikit-learn's 1,797 real 8x8 handwritten digits (ships with the package: works offline).

  Pixel values 0..16 are rescaled to [0, 255] (float32) so the digits go through the same augmentation and
  [0, 1] scaling as every other image; shape (8, 8, 1). The source has no test split: hold one out.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  x = (digits.images.astype(np.float32) * (255.0 / 16.0))[..., None]
  return ArraySource("digits", x, digits.target, 10, class_names=[str(c) for c in range(10)])


def _as_images(path: str, key: str, array: np.ndarray) -> np.ndarray:
  """Checks an image array from a .npz: [N, H, W] or [N, H, W, C], uint8 0..255 or float 0..1 / 0..255."""
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4:
    raise ValueError(f"{path}: '{key}' must be images [N, H, W] or [N, H, W, C], got shape {array.shape}")
  if array.dtype == np.uint8:
    return array
  if not np.issubdtype(array.dtype, np.number):
    raise ValueError(f"{path}: '{key}' has dtype {array.dtype}; give uint8 or float images")
  array = array.astype(np.float32)
  low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
  if low < 0 or high > 255:
    raise ValueError(f"{path}: '{key}' values span [{low}, {high}]; images must be in [0, 1] or [0, 255]")
  return array * 255.0 if high <= 1.0 else array


def npz_source(path: str, num_classes: Optional[int] = None) -> ArraySource:
  """A .npz file with `x_train, y_train, x_test, y_test` and optionally `x_unlabeled`.

  Args:
    path: the .npz file.
    num_classes: if None, what the file declares (a `class_names` array, whose names the export keeps, or a
      `num_classes` scalar), else 1 + the largest label in `y_train`, every class 0..K-1 with an example.

  Labels outside the classes, undeclared classes without an example (labels 0-3 and 7), and test labels of a
  class without a training example are ValueErrors naming them; blank (constant) images are a warning.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no .npz file at {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays: Dict[str, np.ndarray] = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read it as a .npz file ({e})") from e
  missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
  if missing:
    raise ValueError(f"{path}: missing array(s) {missing}; a .npz dataset needs x_train, y_train, x_test, "
                     f"y_test and optionally x_unlabeled (found {sorted(arrays)})")
  x_train = _as_images(path, "x_train", arrays["x_train"])
  x_test = _as_images(path, "x_test", arrays["x_test"]).astype(x_train.dtype, copy=False)
  x_extra = arrays.get("x_unlabeled")
  if x_extra is not None:
    x_extra = _as_images(path, "x_unlabeled", x_extra).astype(x_train.dtype, copy=False)
  class_names = None
  if num_classes is None:
    num_classes, class_names = _declared_classes(path, arrays)
  declared = num_classes is not None
  if not declared:  # the classes are 0 .. the largest training label, and each must have an example
    raw = np.asarray(arrays["y_train"])
    if not np.issubdtype(raw.dtype, np.number):
      raise ValueError(f"{path}: y_train must hold integer labels, got dtype {raw.dtype}")
    num_classes = int(raw.max()) + 1 if raw.size else 0
  y_train = check_labels(arrays["y_train"], num_classes, f"{path} (y_train)")
  seen = np.bincount(y_train, minlength=num_classes) > 0
  if not declared and not seen.all():
    raise ValueError(f"{path}: y_train's labels are {_spans(np.flatnonzero(seen))}, so classes "
                     f"{_spans(np.flatnonzero(~seen))} would have no example; number the classes 0..K-1 without "
                     "gaps, or declare them in the .npz (a `class_names` array, or `num_classes`)")
  y_test = check_labels(arrays["y_test"], num_classes, f"{path} (y_test)")
  unseen = np.flatnonzero(~seen[y_test])
  if unseen.size:
    i = int(unseen[0])
    raise ValueError(f"{path}: y_test holds {unseen.size} label(s) of classes with no example in y_train "
                     f"(classes {_spans(np.unique(y_test[unseen]))}); the first is {y_test[i]} at position {i}")
  name = f"npz:{os.path.basename(path)}"
  for key, x in (("x_test", x_test), ("x_unlabeled", x_extra)):
    if x is not None and x.shape[1:] != x_train.shape[1:]:
      raise ValueError(f"{path}: '{key}' images have shape {x.shape[1:]} but x_train images {x_train.shape[1:]}")
  for key, x in (("x_train", x_train), ("x_unlabeled", x_extra), ("x_test", x_test)):
    warn_constant_images(f"{path} ('{key}')", _constant(x))
  return ArraySource(name, x_train, y_train, num_classes, x_extra=x_extra, x_test=x_test, y_test=y_test,
                     class_names=class_names)


def _declared_classes(path: str, arrays: Dict[str, np.ndarray]) -> Tuple[Optional[int], Optional[List[str]]]:
  """(num_classes, class names) an .npz declares with a `class_names` array or a `num_classes` scalar, else
  (None, None)."""
  if "class_names" in arrays:
    names = [str(n) for n in np.ravel(arrays["class_names"])]
    if "num_classes" in arrays and int(arrays["num_classes"]) != len(names):
      raise ValueError(f"{path}: num_classes = {int(arrays['num_classes'])} but class_names has {len(names)} names")
    return len(names), names
  if "num_classes" in arrays:
    value = np.asarray(arrays["num_classes"])
    if value.size != 1 or not np.issubdtype(value.dtype, np.integer) or int(value) < 1:
      raise ValueError(f"{path}: num_classes must be one positive integer, got {value!r}")
    return int(value), None
  return None, None


def _spans(values: np.ndarray) -> str:
  """'0-3, 7': sorted integers written as runs."""
  runs, values = [], [int(v) for v in values]
  for v in values:
    if runs and v == runs[-1][1] + 1:
      runs[-1][1] = v
    else:
      runs.append([v, v])
  return ", ".join(f"{a}-{b}" if b > a + 1 else (f"{a}, {b}" if b > a else f"{a}") for a, b in runs)


def _constant(x: Optional[np.ndarray]) -> np.ndarray:
  """Indices of the images in `x` whose every pixel has one value (blank)."""
  if x is None or not len(x):
    return np.zeros(0, np.int64)
  flat = x.reshape(len(x), -1)
  return np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))


def warn_constant_images(where: str, indices: Sequence) -> None:
  """A warning counting the blank (constant) images of `where`: a model learns nothing from them, and a set of
  them trained to chance without a word."""
  if len(indices):
    log.warning("%s: %d blank image(s), every pixel one value (the first: %s); check the data", where, len(indices),
                ", ".join(str(i) for i in list(indices)[:5]))
