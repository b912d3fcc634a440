"""Weak and strong views of image batches, as in the paper: flip + pad-and-crop, and RandAugment + Cutout.

Images are float32 in [0, 255] here (uint8 inputs are cast); `finish` clips and scales to [0, 1] at the end.
Both views work on batches [B, H, W, C] and decide everything per image from that image's own draws (`Views`):
a flip, a crop offset, N RandAugment ops with their random signs and ranges, a SamplePairing partner, a Cutout
position. The draws come from TensorFlow's stateless random ops seeded per example, so the same run seed gives the
same views on every run, reader, worker count and resume. They run eagerly and inside `tf.data` maps.

RandAugment's op lists are the paper's Table 5: CIFAR-10 and ImageNet share one list; SVHN's has no Rotate,
TranslateX or SamplePairing (house numbers are also never flipped: a mirrored digit is another or no digit).
The ops are pure functions in augment_ops.py, written after PIL's (why not keras-cv layers: its docstring).

Magnitude M is on RandAugment's scale, where 10 is the reference maximum; the official MPL code uses 16 on
CIFAR-10 and 17 on ImageNet, past that maximum. With m = M / 10 each op's strength grows linearly in m
(`op_parameters` is the table) and is clipped where the op has a bound:
  Rotate +-30m degrees, ShearX/Y +-0.3m, TranslateX/Y +-(m / 8) of the size, Posterize to 8 - round(4m) bits
  (at least 1), Solarize above 256(1 - m), Color towards grey by 0.9m, Contrast and Sharpness by a factor in
  [1 - 0.9m, 1 + 0.9m] (as PIL's enhancers), Brightness +-0.4m of the range, SamplePairing weight 0.4m (at most
  0.5). AutoContrast, Equalize and Invert have no magnitude.
Two deliberate differences from the official code: its Posterize keeps int(4m) bits and its Solarize threshold
is 256m, so both get *weaker* as M grows (at M=16 its Solarize never fires); here every op gets stronger with M.
Where an op samples a range (brightness, contrast, translation, rotation, sharpness) the magnitude sets the
range's bound rather than a fixed value with a random sign, as the keras-cv layers the views used before did.
"""
import dataclasses
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mpl_tf.data import augment_ops as ops

# Table 5 of the paper.
CIFAR10_OPS: Tuple[str, ...] = (
    "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Invert", "Sharpness", "Posterize",
    "SamplePairing", "Solarize", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
IMAGENET_OPS: Tuple[str, ...] = CIFAR10_OPS
SVHN_OPS: Tuple[str, ...] = (
    "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Invert", "Sharpness", "Posterize",
    "Solarize", "ShearX", "ShearY", "TranslateY")
# Not in the paper: 8x8 grey digits. No Color (one channel), no Invert (the digits are all light-on-dark),
# no SamplePairing (a blend of two digits is ambiguous at this size).
DIGITS_OPS: Tuple[str, ...] = (
    "AutoContrast", "Brightness", "Contrast", "Equalize", "Sharpness", "Posterize", "Solarize", "Rotate",
    "ShearX", "ShearY", "TranslateX", "TranslateY")

# Not in the paper: the default for a user's own images (`folder`, `npz`), which may be digits, documents, scans
# or medical images rather than photos. Only ops that keep any image's class: no Invert and no Solarize (at
# M = 10 Solarize inverts every pixel: light-on-dark becomes dark-on-light), no SamplePairing (a blend of two
# images is neither), no Color (colour can be what tells classes apart). Geometry stays mild at M = 10.
OWN_DATA_OPS: Tuple[str, ...] = (
    "AutoContrast", "Brightness", "Contrast", "Equalize", "Sharpness", "Posterize", "Rotate", "ShearX",
    "ShearY", "TranslateX", "TranslateY")

ALL_OPS: Tuple[str, ...] = tuple(sorted(set(CIFAR10_OPS) | set(SVHN_OPS) | set(DIGITS_OPS)))
MAGNITUDE_FREE_OPS = frozenset({"AutoContrast", "Equalize", "Invert"})



@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """How one dataset is augmented.

  Attributes:
    flip: random horizontal flip in the weak view (not for digits or house numbers).
    pad_fraction: pad-and-crop translation, padding by round(pad_fraction * size) pixels (1/8: 4 px on 32x32,
      1 px on 8x8); 0 disables it.
    fill_value: value in [0, 255] for padding, Cutout and the empty area of geometric ops (128 as in the
      official code; 0 for digits, whose background is black).
    ops: RandAugment op names, drawn uniformly.
    num_ops: N, ops applied per image.
    magnitude: M, see the module docstring.
    op_rate: probability that each of the N draws is applied (1.0: always, as in the paper's description;
      the official code applies each with a probability drawn in [0.2, 0.8]).
    cutout_fraction: side of the square Cutout as a fraction of the image side (0.5: 16 px on 32x32, the
      official size); 0 disables it.
    rejitter_strong: apply a second flip / pad-and-crop after RandAugment + Cutout, as the official UDA code does.
  """
  flip: bool = True
  pad_fraction: float = 0.125
  fill_value: float = 128.0
  ops: Tuple[str, ...] = CIFAR10_OPS
  num_ops: int = 2
  magnitude: float = 16.0
  op_rate: float = 1.0
  cutout_fraction: float = 0.5
  rejitter_strong: bool = True

  def __post_init__(self):
    unknown = [op for op in self.ops if op not in ALL_OPS]
    if unknown:
      raise ValueError(f"unknown RandAugment op(s) {unknown}; known: {list(ALL_OPS)}")
    if not self.ops and self.num_ops:
      raise ValueError("AugmentConfig.ops is empty but num_ops > 0")
    if self.magnitude < 0 or self.magnitude > 30:
      raise ValueError(
          f"magnitude must be in [0, 30] (10 is RandAugment's reference maximum), got {self.magnitude}")
    if not 0.0 <= self.cutout_fraction <= 1.0 or not 0.0 <= self.pad_fraction <= 1.0:
      raise ValueError("cutout_fraction and pad_fraction must be in [0, 1]")
    if not 0.0 <= self.op_rate <= 1.0:
      raise ValueError(f"op_rate must be in [0, 1], got {self.op_rate}")


def border_fill(images: Sequence[np.ndarray]) -> float:
  """The median pixel value on the outer ring of `images` (values in [0, 255]): the background colour.

  Padding, Cutout and the empty corners of rotations filled with it look like background rather than a
  grey square (CIFAR's 128) or a black one: what a digit, a scan or a photo would show there.
  """
  rings = []
  for image in images:
    image = np.asarray(image, np.float32)
    rings += [image[0].ravel(), image[-1].ravel(), image[:, 0].ravel(), image[:, -1].ravel()]
  if not rings:
    raise ValueError("border_fill needs at least one image")
  return float(np.clip(np.median(np.concatenate(rings)), 0.0, 255.0))


def describe(config: AugmentConfig) -> str:
  """One line for the log: every setting of the views, flips spelled out."""
  flips = "on" if config.flip else "off (build_dataset.flip = True allows them)"
  return (f"weak view: horizontal flips {flips}, pad-and-crop {config.pad_fraction:g} of the side; strong view: "
          f"RandAugment N={config.num_ops} M={config.magnitude:g} over {list(config.ops)}, Cutout "
          f"{config.cutout_fraction:g} of the side; fill value {config.fill_value:g}")


def _clip(value: float, low: float, high: float) -> float:
  return float(min(max(value, low), high))


def op_parameters(name: str, magnitude: float) -> Dict[str, float]:
  """The strength of op `name` at magnitude M, in the op's own units (see the module docstring)."""
  m = magnitude / 10.0
  table = {
      "AutoContrast": {}, "Equalize": {}, "Invert": {},
      "Rotate": {"degrees": 30.0 * m},
      "ShearX": {"shear": 0.3 * m}, "ShearY": {"shear": 0.3 * m},
      "TranslateX": {"fraction": _clip(m / 8.0, 0.0, 1.0)}, "TranslateY": {"fraction": _clip(m / 8.0, 0.0, 1.0)},
      "Posterize": {"bits": int(_clip(8 - round(4 * m), 1, 8))},
      "Solarize": {"threshold": _clip(256.0 * (1.0 - m), 0.0, 255.0)},
      "Color": {"degenerate": _clip(0.9 * m, 0.0, 1.0)},
      "Contrast": {"delta": _clip(0.9 * m, 1e-3, 1.0)},
      "Sharpness": {"delta": _clip(0.9 * m, 0.0, 1.0)},
      "Brightness": {"delta": _clip(0.4 * m, 0.0, 1.0)},
      "SamplePairing": {"weight": _clip(0.4 * m, 0.0, 0.5)},
  }
  if name not in table:
    raise ValueError(f"unknown RandAugment op {name!r}; known: {sorted(table)}")
  return table[name]


def op_function(name: str, magnitude: float, fill_value: float = 128.0) -> Callable:
  """The RandAugment op `name` at magnitude M as `fn(images, u, partners)`: images [b, H, W, C] in [0, 255],
  u float32 [b, 2] uniform draws (a value in the op's range, a sign), partners [b, H, W, C] (SamplePairing's).

  Ops with a range (Rotate, TranslateX/Y, Brightness, Contrast, Sharpness) take a value uniform in
  [-bound, bound] around "no change"; Shear takes its fixed size with a random sign; Color, Posterize,
  Solarize and SamplePairing have a fixed strength.
  """
  p = op_parameters(name, magnitude)
  fill = float(fill_value)

  def centred(u):  # uniform in [-1, 1)
    return 2.0 * u[:, 0] - 1.0

  def sign(u):
    return tf.where(u[:, 1] < 0.5, -1.0, 1.0)

  def size(images, axis):
    return tf.cast(tf.shape(images)[2 if axis == "x" else 1], tf.float32)

  table = {
      "AutoContrast": lambda x, u, q: ops.autocontrast(x),
      "Equalize": lambda x, u, q: ops.equalize(x),
      "Invert": lambda x, u, q: ops.invert(x),
      "Posterize": lambda x, u, q: ops.posterize(x, p["bits"]),
      "Solarize": lambda x, u, q: ops.solarize(x, p["threshold"]),
      "Color": lambda x, u, q: ops.color(x, tf.fill(tf.shape(x)[:1], 1.0 - p["degenerate"])),
      "Contrast": lambda x, u, q: ops.contrast(x, 1.0 + p["delta"] * centred(u)),
      "Sharpness": lambda x, u, q: ops.sharpness(x, 1.0 + p["delta"] * centred(u)),
      "Brightness": lambda x, u, q: ops.brightness(x, ops.MAX * p["delta"] * centred(u)),
      "SamplePairing": lambda x, u, q: ops.sample_pairing(x, q, p["weight"]),
      "Rotate": lambda x, u, q: ops.rotate(x, p["degrees"] * centred(u), fill),
      "ShearX": lambda x, u, q: ops.shear(x, p["shear"] * sign(u), "x", fill),
      "ShearY": lambda x, u, q: ops.shear(x, p["shear"] * sign(u), "y", fill),
      "TranslateX": lambda x, u, q: ops.translate(x, p["fraction"] * size(x, "x") * centred(u), "x", fill),
      "TranslateY": lambda x, u, q: ops.translate(x, p["fraction"] * size(x, "y") * centred(u), "y", fill),
  }
  return table[name]


def _to_float(images: tf.Tensor) -> tf.Tensor:
  return tf.cast(images, tf.float32)


WEAK_DRAWS = 3  # flip, crop row, crop column
_DRAWS_PER_OP = 5  # applied?, which op, the op's value, its sign, SamplePairing's partner


def _columns(draws: tf.Tensor, start: int, count: int) -> tf.Tensor:
  return draws[:, start:start + count]


class WeakAugment:
  """Weak view: horizontal flip (if allowed) and pad-and-crop translation, per image, from its draws.

  Args:
    config: the dataset's augmentation settings.
    image_shape: (H, W, C) of the images it will see (sets the padding in pixels).
  """

  def __init__(self, config: AugmentConfig, image_shape: Sequence[int]):
    self.config = config
    self._pad = int(round(config.pad_fraction * min(int(image_shape[0]), int(image_shape[1]))))

  def __call__(self, images: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
    """images [B, H, W, C]; draws float32 [B, >= WEAK_DRAWS] (its first WEAK_DRAWS columns are read)."""
    images = _to_float(images)
    u = _columns(draws, 0, WEAK_DRAWS)
    if self.config.flip:
      images = ops.flip(images, u[:, 0])
    return ops.pad_and_crop(images, self._pad, self.config.fill_value, u[:, 1], u[:, 2])


class StrongAugment:
  """Strong view: N RandAugment ops per image at magnitude M, then Cutout (then optionally the weak jitter).

  Give it the weak view of the images, as the official code does, so the strong view is a further distortion
  of the weak one. Each of the N rounds sends every image to the op its draws chose (or none, with probability
  1 - op_rate); the images of one op are processed together (`tf.dynamic_partition` / `dynamic_stitch`), so a
  round costs one op per image, not every op on every image. SamplePairing's partner is another image of the
  same batch, drawn per image.

  Args:
    config: the dataset's augmentation settings.
    image_shape: (H, W, C) of the images it will see.
    offset: the first column of a view's draws that this view reads (the weak view reads those before).
  """

  def __init__(self, config: AugmentConfig, image_shape: Sequence[int], offset: int = WEAK_DRAWS):
    self.config = config
    self.offset = offset
    self.op_functions = [op_function(name, config.magnitude, config.fill_value) for name in config.ops]
    self._needs_partner = "SamplePairing" in config.ops
    self._num_ops = config.num_ops if self.op_functions else 0
    self._jitter = WeakAugment(config, image_shape) if config.rejitter_strong else None
    self.num_draws = _DRAWS_PER_OP * self._num_ops + 2 + (WEAK_DRAWS if self._jitter else 0)

  def _round(self, images: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """One RandAugment round: each image through the op its draws `u` [B, 5] chose."""
    count = len(self.op_functions)
    chosen = tf.minimum(tf.cast(u[:, 1] * count, tf.int32), count - 1)
    which = tf.where(u[:, 0] < self.config.op_rate, chosen, count)  # `count`: this round leaves the image
    batch = tf.shape(images)[0]
    partners = images
    if self._needs_partner:  # another image of the batch: i + 1 + floor(u (B - 1)) mod B
      others = tf.maximum(batch - 1, 1)
      step = 1 + tf.minimum(tf.cast(u[:, 4] * tf.cast(others, tf.float32), tf.int32), others - 1)
      partners = tf.gather(images, (tf.range(batch) + step) % batch)
    positions = tf.dynamic_partition(tf.range(batch), which, count + 1)
    results = []
    for k, fn in enumerate(self.op_functions):
      idx = positions[k]
      results.append(fn(tf.gather(images, idx), tf.gather(u[:, 2:4], idx), tf.gather(partners, idx)))
    results.append(tf.gather(images, positions[count]))
    return tf.ensure_shape(tf.dynamic_stitch(positions, results), images.shape)

  def __call__(self, images: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
    """images [B, H, W, C] (the weak view); draws float32 [B, offset + num_draws]."""
    images = _to_float(images)
    if images.shape.rank != 4:
      raise ValueError(f"StrongAugment works on batches [B, H, W, C], got shape {images.shape}")
    column = self.offset
    for _ in range(self._num_ops):
      images = self._round(images, _columns(draws, column, _DRAWS_PER_OP))
      column += _DRAWS_PER_OP
    if self.config.cutout_fraction:
      u = _columns(draws, column, 2)
      images = ops.cutout(images, self.config.cutout_fraction, self.config.fill_value, u[:, 0], u[:, 1])
    column += 2
    if self._jitter is not None:
      images = self._jitter(images, _columns(draws, column, WEAK_DRAWS))
    return tf.clip_by_value(images, 0.0, 255.0)


def finish(images: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> float32 [0, 1], the range the models take (they normalise internally)."""
  return tf.clip_by_value(_to_float(images), 0.0, 255.0) / 255.0


@dataclasses.dataclass(frozen=True)
class Views:
  """Batch-level view functions for one dataset, driven by per-example draws.

  `draws(seed)` makes one example's random numbers, float32 [num_draws], with TensorFlow's stateless ops from
  that example's seed (int64 [2]; the pipeline derives it from the run's seed and the example's position in
  its stream, `pipeline.example_seed`). A batch's draws [B, num_draws] then drive `weak(x, draws)` and
  `strong(weak_x, draws)` (each reads its own columns); `finish(view)` scales to the models' range. A view of
  an example is therefore a function of (run seed, stream, position, view) alone.
  """
  weak: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  strong: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  finish: Callable[[tf.Tensor], tf.Tensor]
  num_draws: int
  distribution: str = "uniform"  # or "normal"

  def draws(self, seed: tf.Tensor) -> tf.Tensor:
    """One example's draws from its seed: uniform in [0, 1) (images) or standard normal (noise views)."""
    shape = [max(self.num_draws, 1)]
    if self.distribution == "normal":
      return tf.random.stateless_normal(shape, seed=seed)
    return tf.random.stateless_uniform(shape, seed=seed)


def image_views(config: AugmentConfig, image_shape: Sequence[int]) -> Views:
  """The weak and strong image views of `config` for images of `image_shape`, and the [0, 1] scaling."""
  strong = StrongAugment(config, image_shape, offset=WEAK_DRAWS)
  return Views(weak=WeakAugment(config, image_shape), strong=strong, finish=finish,
               num_draws=WEAK_DRAWS + strong.num_draws)


def gaussian_noise_views(stddev: float = 0.0, dimensions: int = 2) -> Views:
  """Views for vector data (two moons): weak = identity, strong = identity plus N(0, stddev^2) noise, the
  noise being the example's normal draws."""
  if stddev < 0:
    raise ValueError(f"noise stddev must be >= 0, got {stddev}")

  def identity(x: tf.Tensor, draws: tf.Tensor = None) -> tf.Tensor:
    del draws
    return tf.cast(x, tf.float32)

  def noisy(x: tf.Tensor, draws: tf.Tensor) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return x + stddev * tf.reshape(draws[:, :dimensions], tf.shape(x)) if stddev > 0 else x

  return Views(weak=identity, strong=noisy, finish=identity, num_draws=dimensions, distribution="normal")
