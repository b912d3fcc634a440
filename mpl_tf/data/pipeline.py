"""tf.data pipelines: example streams -> the batches `MetaPseudoLabelsModel.fit` and evaluation consume.

The contract (fixed by the algorithm code):
  train       infinite; `((x_l, y_l), x_u)`, or with two views `((x_l, y_l), (x_u_weak, x_u_strong))`;
              x_l float32 [B, *shape] in [0, 1], y_l int32 [B], unlabeled batches of uda_ratio * B.
  labeled     infinite `(x, y)` batches of the labeled set in the weak view (supervised training, finetuning).
  evaluation  finite `(x, y)` batches, not augmented.
The two views of an unlabeled example are of the same image: the strong view is RandAugment + Cutout applied to
the weak view, as in the official code. Per-example work (decoding, ImageNet's crops, the example's random
draws) runs in a parallel map before batching; augmentation runs on whole batches (each image through its own
draws) in a parallel map after it, which amortises tf.data's per-element cost; everything is prefetched.

Randomness: every example of a training stream gets the seed (stream key, position in the stream), where the
key derives from the run's seed and the stream's name (`example_seed`), and everything random about its views
is drawn from that seed with stateless ops. Positions count across epochs, so an example seen again gets new
views. The pipeline therefore holds no stateful random op: the same seed gives the same batches whatever the
parallelism, every reader of a mesh makes the same views, and the iterator's symbolic checkpoint (a count per
stream) restores the very batches an uninterrupted run would have seen.
"""
from typing import Callable, Optional

import tensorflow as tf

from mpl_tf.data.augment import Views
from mpl_tf.data.splits import derived_seed

AUTOTUNE = tf.data.AUTOTUNE
Prepare = Callable[..., tf.Tensor]  # (image, seed=None) -> image; the seed is an example's int64 [2]


def as_float(image: tf.Tensor, seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-example preparation of fixed-size data: only a cast (values stay in [0, 255])."""
  del seed
  return tf.cast(image, tf.float32)


def example_seed(key: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
  """The seed of one example of a training stream: int64 [stream key, position in the stream]."""
  return tf.stack([key, position])


def _split_seed(seed: tf.Tensor):
  """An example's seed -> (the seed of its view draws, the seed of its preparation's crop)."""
  return (tf.random.experimental.stateless_fold_in(seed, 0), tf.random.experimental.stateless_fold_in(seed, 1))


def _prepared(stream: tf.data.Dataset, seed: int, name: str, prepare: Prepare, views: Views,
              labeled: bool) -> tf.data.Dataset:
  """`(prepared image, the example's draws, *rest)` for every element `(image, *rest)` of `stream`, in one
  parallel map (labels cast to int32). Each example's randomness comes from `example_seed(key, position)`, the
  key derived from the run's `seed` and the stream's `name`."""
  key = tf.constant(derived_seed(seed, f"views/{name}"), tf.int64)

  def apply(position, element):
    x, *rest = element if isinstance(element, tuple) else (element,)
    if labeled:
      rest[0] = tf.cast(rest[0], tf.int32)
    draw_seed, crop_seed = _split_seed(example_seed(key, position))
    return (prepare(x, crop_seed), views.draws(draw_seed), *rest)

  return stream.enumerate().map(apply, num_parallel_calls=AUTOTUNE)


def random_resized_crop(size: int, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3)) -> Prepare:
  """Inception-style random crop resized to size x size: ImageNet's training-time translation and scale."""

  def prepare(image: tf.Tensor, seed: Optional[tf.Tensor] = None) -> tf.Tensor:
    if seed is None:
      raise ValueError("random_resized_crop needs the example's seed (a training stream's `example_seed`)")
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=aspect_ratio_range, area_range=area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method="bicubic")
    return tf.ensure_shape(tf.clip_by_value(resized, 0.0, 255.0), [size, size, 3])

  return prepare


def center_crop(size: int, crop_fraction: float = 224 / 256) -> Prepare:
  """Central crop of `crop_fraction` of the shorter side, resized to size x size: ImageNet's evaluation view."""

  def prepare(image: tf.Tensor, seed: Optional[tf.Tensor] = None) -> tf.Tensor:
    del seed
    shape = tf.shape(image)
    side = tf.cast(crop_fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    top, left = (shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, side, side)
    resized = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method="bicubic")
    return tf.ensure_shape(tf.clip_by_value(resized, 0.0, 255.0), [size, size, 3])

  return prepare


def _check_positive(**values):
  for key, value in values.items():
    if int(value) != value or value < 1:
      raise ValueError(f"{key} must be a positive integer, got {value!r}")


def train_dataset(labeled: tf.data.Dataset, unlabeled: tf.data.Dataset, *, batch_size: int,
                  unlabeled_batch_size: int, views: Views, seed: int, prepare: Prepare = as_float,
                  two_views: bool = True, unlabeled_view: str = "strong") -> tf.data.Dataset:
  """The infinite MPL training dataset.

  Elements may carry more per-example tensors than the image (labeled `(example, label, *extra)`, unlabeled
  `(example, *extra)`): they are batched with their image and passed through untouched, e.g. a big teacher's
  stored prediction of it (`mpl_tf.data.stored_predictions`).

  Args:
    labeled: infinite, shuffled `(example, label)` stream.
    unlabeled: infinite, shuffled `example` stream.
    batch_size: B, labeled examples a step.
    unlabeled_batch_size: unlabeled examples a step (uda_ratio * B).
    views: the dataset's weak / strong / finish functions and per-example draws.
    seed: the run's seed; every example's views derive from it and the example's position (`example_seed`).
    prepare: per-example preparation to a fixed shape (cast; ImageNet: random resized crop).
    two_views: yield `(x_u_weak, x_u_strong)`; else one view, chosen by `unlabeled_view`.
    unlabeled_view: "strong" or "weak", the single unlabeled view when `two_views` is False.
  """
  _check_positive(batch_size=batch_size, unlabeled_batch_size=unlabeled_batch_size)
  if unlabeled_view not in ("strong", "weak"):
    raise ValueError(f"unlabeled_view must be 'strong' or 'weak', got {unlabeled_view!r}")
  lab = labeled_dataset(labeled, batch_size=batch_size, views=views, seed=seed, prepare=prepare, prefetch=False,
                        stream="train/labeled")

  def unlabeled_views(x, draws, *extra):
    weak = views.weak(x, draws)
    if two_views:
      out = (views.finish(weak), views.finish(views.strong(weak, draws)))
    else:
      out = views.finish(views.strong(weak, draws) if unlabeled_view == "strong" else weak)
    return (out, *extra) if extra else out

  unl = _prepared(unlabeled, seed, "train/unlabeled", prepare, views, labeled=False)
  unl = unl.batch(unlabeled_batch_size, drop_remainder=True).map(unlabeled_views, num_parallel_calls=AUTOTUNE)
  return tf.data.Dataset.zip((lab, unl)).prefetch(AUTOTUNE)


def labeled_dataset(labeled: tf.data.Dataset, *, batch_size: int, views: Views, seed: int,
                    prepare: Prepare = as_float, prefetch: bool = True, stream: str = "labeled") -> tf.data.Dataset:
  """Infinite `(x, y)` batches of the labeled stream in the weak view (x float32 [0, 1], y int32); `stream`
  names it for its examples' seeds (`example_seed`)."""
  _check_positive(batch_size=batch_size)
  ds = _prepared(labeled, seed, stream, prepare, views, labeled=True).batch(batch_size, drop_remainder=True)
  ds = ds.map(lambda x, draws, y, *extra: (views.finish(views.weak(x, draws)), y, *extra),
              num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE) if prefetch else ds


def eval_dataset(examples: Optional[tf.data.Dataset], *, batch_size: int, finish: Callable[[tf.Tensor], tf.Tensor],
                 prepare: Prepare = as_float) -> Optional[tf.data.Dataset]:
  """Finite `(x, y)` batches, not augmented (the last batch may be smaller); None passes through."""
  if examples is None:
    return None
  _check_positive(eval_batch_size=batch_size)
  ds = examples.map(lambda x, y: (finish(prepare(x)), tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)
  return ds.batch(batch_size).prefetch(AUTOTUNE)

