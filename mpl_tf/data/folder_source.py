"""A folder of image files as a `Source` that streams from disk: `path/<class>/*.png` (+ unlabeled, test folders).

The source holds file paths and labels only. Its streams shuffle *indices* (seeded, a full reshuffle every
epoch, as `ArraySource` does), gather the path, and read, decode and resize the file in a parallel but
deterministic `map`: no pixel enters the `tf.data` graph, so a folder may hold far more than TensorFlow's 2 GB
graph limit, and memory holds only the images in flight. A given seed gives the same order on every run.

Every file is checked once, when the source is made: a parallel `tf.data` pass decodes it and keeps only its
(index, height, width, channels), with `ignore_errors()`, so the indices that do not come out are the files
that could not be read or decoded (random bytes, a truncated PNG or JPEG, a file removed meanwhile).

Corrupt files are *skipped*, not fatal: one bad file among a hundred thousand should not stop a run. A warning
gives their count and the first few paths; the pool, the test set and the unlabeled set are what remains. A
class folder whose every file is unreadable (or that holds no image file), an empty test or unlabeled folder,
or one whose every file is unreadable, is an error naming the folder. A file that turns unreadable after the
check fails the stream with TensorFlow's decode error.

Sizes: with `image_size` every image is resized to it in the `map` (antialiased, rounded, clipped to [0, 255]).
Without it all images must share one size, which becomes the source's; mixed sizes are an error naming two
files of different sizes and asking for `build_dataset.image_size`.

Channels: 1 when every image is grayscale (with or without alpha), else 3; `decode_image(channels=...)`
converts grayscale to RGB and drops alpha, so folders mixing grayscale, RGB and RGBA files just work.
Images come out as uint8 [H, W, C] in [0, 255]; the pipeline scales them.
"""
import logging
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mpl_tf.data.sources import Source, shuffled_indices, warn_constant_images

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_NAMED = 5  # corrupt files named in the warning


class FolderSource(Source):
  """Image files streamed from disk, decoded in the `tf.data` map (see the module docstring).

  Indices `[0, len(pool_labels))` are the pool; the extra unlabeled files follow them, as in `ArraySource`, so
  `examples` accepts either. `image_shape` is fixed: (height, width, channels) after any resize.
  """

  def __init__(self, name: str, paths: Sequence[str], labels: np.ndarray, num_classes: int,
               image_shape: Tuple[int, int, int], *, resize: bool, extra_paths: Sequence[str] = (),
               test_paths: Sequence[str] = (), test_labels: Optional[np.ndarray] = None,
               class_names: Optional[Sequence[str]] = None):
    self.name = name
    self.num_classes = int(num_classes)
    self.pool_labels = np.asarray(labels, np.int64)
    if len(paths) != len(self.pool_labels):
      raise ValueError(f"{name}: {len(paths)} training files but {len(self.pool_labels)} labels")
    self.image_shape = tuple(int(d) for d in image_shape)
    self._resize = resize
    self.num_extra_unlabeled = len(extra_paths)
    self._paths = list(paths) + list(extra_paths)
    self._labels = np.concatenate([self.pool_labels, np.full(self.num_extra_unlabeled, -1, np.int64)])
    self._test_paths = list(test_paths)
    self._test_labels = np.asarray(test_labels if test_labels is not None else [], np.int64)
    self.num_test = len(self._test_paths)
    self.class_names = tuple(class_names) if class_names is not None else None

  def decode(self, path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one file to uint8 `image_shape`, resized if the source was given an image size."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=self.image_shape[-1], expand_animations=False)
    if self._resize:
      image = resize_image(image, self.image_shape[:2])
    return tf.ensure_shape(image, self.image_shape)

  def _read(self, index_ds: tf.data.Dataset, paths: List[str], labels: np.ndarray) -> tf.data.Dataset:
    """`(image, label)` of each index: only the path table (strings) is in the graph, never the pixels."""
    paths = tf.constant(paths, tf.string)
    labels = tf.constant(labels, tf.int32)
    return index_ds.map(lambda i: (self.decode(tf.gather(paths, i)), tf.gather(labels, i)),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def examples(self, indices: np.ndarray) -> tf.data.Dataset:
    index_ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    return self._read(index_ds, self._paths, self._labels)

  def labeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    return self._read(shuffled_indices(indices, seed), self._paths, self._labels)

  def unlabeled_stream(self, indices: np.ndarray, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    pool = len(self.pool_labels)
    extra = np.arange(pool, pool + self.num_extra_unlabeled)
    return self.labeled_stream(np.concatenate([indices, extra]), seed, shuffle_buffer).map(lambda x, y: x)

  def test_labels(self) -> Optional[np.ndarray]:
    return self._test_labels if self.num_test else None

  def test_examples(self) -> Optional[tf.data.Dataset]:
    if not self.num_test:
      return None
    index_ds = tf.data.Dataset.range(self.num_test)
    return self._read(index_ds, self._test_paths, self._test_labels)

  def sample_images(self, count: int) -> Optional[List[np.ndarray]]:
    """Up to `count` pool images, evenly spaced over the pool, decoded now (for the border fill colour)."""
    step = max(1, len(self.pool_labels) // max(1, count))
    indices = np.arange(0, len(self.pool_labels), step)[:count]
    return [x for x, _ in self.examples(indices).as_numpy_iterator()]


def resize_image(images, image_size: Tuple[int, int]) -> tf.Tensor:
  """uint8 images [H, W, C] or [N, H, W, C] resized to `image_size` (height, width) as training sees them:
  bilinear with antialias, clipped to [0, 255], rounded (a constant colour stays exact). `mpl-predict` resizes
  with this too, so a served image of another size is what the student was trained on."""
  resized = tf.image.resize(images, image_size, antialias=True)
  return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def read_image(path: str) -> np.ndarray:
  """Decodes one image file to uint8 [H, W, C] now, or raises a one-line ValueError naming the file."""
  try:
    return tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as e:
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", e.message.splitlines()[0])
    raise ValueError(f"corrupt or unreadable image file {path}: {reason}") from None


def image_files(folder: str) -> List[str]:
  """Image files under `folder` (recursively), sorted, by extension."""
  found = []
  for root, _, files in os.walk(folder):
    found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


def _class_folders(path: str) -> List[str]:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no image folder at {path}")
  classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
  if not classes:
    raise ValueError(f"{path} is empty: expected one sub-folder of images per class (e.g. {path}/cat/1.png)")
  return classes


def scan_images(paths: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
  """(int64 [N, 3], bool [N]): (height, width, channels) of every file, -1 where it fails, and whether the image
  is blank (every pixel one value); each file decoded once, in parallel.

  The pass carries only each file's index, shape and blankness, and `ignore_errors()` drops the elements whose
  read or decode fails: the rows left at -1 are the corrupt or unreadable files.
  """
  def probe(index, path):
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    return index, tf.shape(image, tf.int64), tf.reduce_max(image) == tf.reduce_min(image)

  shapes = np.full((len(paths), 3), -1, np.int64)
  blank = np.zeros(len(paths), bool)
  if not len(paths):
    return shapes, blank
  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), list(paths)))
  ds = ds.map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors().batch(1024)
  for index, shape, constant in ds.as_numpy_iterator():
    shapes[index] = shape
    blank[index] = constant
  return shapes, blank


def _shape_of(where: str, paths: Sequence[str], shapes: np.ndarray,
              image_size: Optional[Tuple[int, int]]) -> Tuple[int, int, int]:
  """The source's image shape from the readable files' shapes (module docstring: sizes and channels)."""
  channels = 1 if np.all(shapes[:, 2] <= 2) else 3
  if image_size is not None:
    return int(image_size[0]), int(image_size[1]), channels
  differ = np.flatnonzero(np.any(shapes[:, :2] != shapes[0, :2], axis=1))
  if differ.size:
    (h0, w0), (h1, w1) = shapes[0, :2], shapes[differ[0], :2]
    raise ValueError(f"{where}: images of mixed sizes: {paths[0]} is {h0}x{w0} but {paths[differ[0]]} is "
                     f"{h1}x{w1}; set build_dataset.image_size to resize every image to one size")
  return int(shapes[0, 0]), int(shapes[0, 1]), channels


def folder_source(path: str, *, unlabeled_path: Optional[str] = None, test_path: Optional[str] = None,
                  image_size: Optional[Tuple[int, int]] = None) -> FolderSource:
  """Images in one sub-folder per class (`path/<class>/*.png`), checked once and streamed from disk.

  Every file is decoded once here (in parallel, keeping only its size): corrupt or unreadable files are skipped
  with a warning that counts them and names the first few; a class folder with no readable image, or an empty
  or wholly unreadable test / unlabeled folder, is a ValueError naming it. Images come out as uint8 with 1
  channel when every file is grayscale, else 3 (grayscale and RGBA files are converted).

  Args:
    path: the labeled images; classes are the sub-folder names in sorted order.
    unlabeled_path: optional folder of unlabeled images (searched recursively).
    test_path: optional folder with the same class sub-folders as `path`; without it, hold a test set out.
    image_size: optional (height, width) to resize every image to; without it all images must share a size.
  """
  classes = _class_folders(path)
  files, labels = [], []
  for c, name in enumerate(classes):
    found = image_files(os.path.join(path, name))
    if not found:
      raise ValueError(f"class folder {os.path.join(path, name)} is empty: it has no {'/'.join(IMAGE_EXTENSIONS)} "
                       "files")
    files += found
    labels += [c] * len(found)
  test_files, test_labels = [], []
  if test_path is not None:
    test_classes = _class_folders(test_path)
    if test_classes != classes:
      raise ValueError(f"{test_path}: class folders {test_classes} differ from those of {path}: {classes}")
    for c, name in enumerate(classes):
      found = image_files(os.path.join(test_path, name))
      test_files += found
      test_labels += [c] * len(found)
    if not test_files:
      raise ValueError(f"test folder {test_path} is empty: its class folders hold no images")
  extra_files = []
  if unlabeled_path is not None:
    if not os.path.isdir(unlabeled_path):
      raise FileNotFoundError(f"no unlabeled image folder at {unlabeled_path}")
    extra_files = image_files(unlabeled_path)
    if not extra_files:
      raise ValueError(f"unlabeled folder {unlabeled_path} is empty: it has no image files")

  everything = files + test_files + extra_files
  shapes, blank = scan_images(everything)
  readable = shapes[:, 0] >= 0
  warn_constant_images(path, _keep(everything, blank))  # names the files, test and unlabeled ones included
  bad = _keep(everything, ~readable)
  if bad:
    more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
    log.warning("%s: skipping %d corrupt or unreadable image file(s) of %d: %s%s", path, len(bad), len(everything),
                ", ".join(bad[:_NAMED]), more)
  labels = np.array(labels, np.int64)
  pool_ok, test_ok, extra_ok = np.split(readable, [len(files), len(files) + len(test_files)])
  for c, name in enumerate(classes):
    if not pool_ok[labels == c].any():
      raise ValueError(f"class folder {os.path.join(path, name)}: none of its {int(np.sum(labels == c))} image "
                       "files can be read (all corrupt or unreadable)")
  for folder, found, ok in ((test_path, test_files, test_ok), (unlabeled_path, extra_files, extra_ok)):
    if found and not ok.any():
      raise ValueError(f"{folder}: none of its {len(found)} image files can be read (all corrupt or unreadable)")

  image_shape = _shape_of(path, _keep(everything, readable), shapes[readable], image_size)
  return FolderSource(f"folder:{os.path.basename(os.path.normpath(path))}", _keep(files, pool_ok), labels[pool_ok],
                      len(classes), image_shape, resize=image_size is not None,
                      extra_paths=_keep(extra_files, extra_ok), test_paths=_keep(test_files, test_ok),
                      test_labels=np.array(test_labels, np.int64)[test_ok], class_names=classes)


def _keep(items: Sequence[str], ok: np.ndarray) -> List[str]:
  return [item for item, good in zip(items, ok) if good]
