"""Weak and strong views of image batches, as in the paper: flip + pad-and-crop, and RandAugment + Cutout.

Images are float32 in [0, 255] here (uint8 inputs are cast); `finish` clips and scales to [0, 1] at the end.
Both views work on batches [B, H, W, C] and draw everything per image: a flip, a crop offset, N RandAugment ops
with their random signs and ranges, a Cutout position. They run eagerly and inside `tf.data` maps.

RandAugment's op lists are the paper's Table 5: CIFAR-10 and ImageNet share one list; SVHN's has no Rotate,
TranslateX or SamplePairing (house numbers are also never flipped: a mirrored digit is another or no digit).
The ops are keras-cv / Keras 3 layers except SamplePairing and pad-and-crop (augment_ops.py).

Magnitude M is on RandAugment's scale, where 10 is the reference maximum; the official MPL code uses 16 on
CIFAR-10 and 17 on ImageNet, past that maximum. With m = M / 10 each op's strength grows linearly in m
(`op_parameters` is the table) and is clipped where the op has a bound:
  Rotate +-30m degrees, ShearX/Y +-0.3m, TranslateX/Y +-(m / 8) of the size, Posterize to 8 - round(4m) bits
  (at least 1), Solarize above 256(1 - m), Color towards grey by 0.9m, Contrast and Sharpness by a factor in
  [1 - 0.9m, 1 + 0.9m] (as PIL's enhancers), Brightness +-0.4m of the range, SamplePairing weight 0.4m (at most
  0.5). AutoContrast, Equalize and Invert have no magnitude.
Two deliberate differences from the official code: its Posterize keeps int(4m) bits and its Solarize threshold
is 256m, so both get *weaker* as M grows (at M=16 its Solarize never fires); here every op gets stronger with M.
Where a keras-cv layer samples a range (brightness, contrast, translation, rotation, sharpness) the magnitude
sets the range's bound rather than a fixed value with a random sign.
"""
import dataclasses
from typing import Callable, Dict, Sequence, Tuple

import keras
import keras_cv
import numpy as np
import tensorflow as tf

from mpl_tf.data.augment_ops import PAIRING_KEY, SamplePairing, random_pad_and_crop

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

_RANGE = (0, 255)


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


def make_op(name: str, magnitude: float, fill_value: float = 128.0) -> keras.layers.Layer:
  """Builds the layer for one RandAugment op at magnitude M, for images in [0, 255]."""
  p = op_parameters(name, magnitude)
  layers = keras_cv.layers
  geometric = {"fill_mode": "constant", "fill_value": float(fill_value)}
  if name == "AutoContrast":
    return layers.AutoContrast(value_range=_RANGE)
  if name == "Equalize":
    return layers.Equalization(value_range=_RANGE)
  if name == "Invert":
    return keras.layers.RandomInvert(factor=(1.0, 1.0), value_range=_RANGE)
  if name == "Rotate":
    return layers.RandomRotation(factor=p["degrees"] / 360.0, **geometric)
  if name in ("ShearX", "ShearY"):
    factor = (p["shear"], p["shear"])  # fixed size, random sign (keras-cv draws the sign per image)
    axes = {"x_factor": factor} if name == "ShearX" else {"y_factor": factor}
    return layers.RandomShear(**axes, **geometric)
  if name in ("TranslateX", "TranslateY"):
    f = p["fraction"]
    height, width = ((0.0, 0.0), (-f, f)) if name == "TranslateX" else ((-f, f), (0.0, 0.0))
    return layers.RandomTranslation(height_factor=height, width_factor=width, **geometric)
  if name == "Posterize":
    return layers.Posterization(value_range=_RANGE, bits=p["bits"])
  if name == "Solarize":
    return layers.Solarization(value_range=_RANGE, threshold_factor=(p["threshold"], p["threshold"]))
  if name == "Color":
    return layers.RandomColorDegeneration(factor=(p["degenerate"], p["degenerate"]))
  if name == "Contrast":
    return layers.RandomContrast(value_range=_RANGE, factor=p["delta"])
  if name == "Sharpness":
    # Keras 3 factor f blends towards a blur (f=0), the image (f=0.5) or a sharpened image (f=1): PIL's 2f.
    d = p["delta"] / 2.0
    return keras.layers.RandomSharpness(factor=(0.5 - d, 0.5 + d), value_range=_RANGE)
  if name == "Brightness":
    return layers.RandomBrightness(factor=p["delta"], value_range=_RANGE)
  if name == "SamplePairing":
    return SamplePairing(weight=p["weight"], value_range=_RANGE)
  raise AssertionError(name)  # op_parameters already rejected unknown names


def _to_float(images: tf.Tensor) -> tf.Tensor:
  return tf.cast(images, tf.float32)


class WeakAugment:
  """Weak view: random horizontal flip (if allowed) and pad-and-crop translation, per image.

  Args:
    config: the dataset's augmentation settings.
    image_shape: (H, W, C) of the images it will see (sets the padding in pixels).
  """

  def __init__(self, config: AugmentConfig, image_shape: Sequence[int]):
    self.config = config
    self._flip = keras_cv.layers.RandomFlip(mode="horizontal") if config.flip else None
    self._pad = int(round(config.pad_fraction * min(int(image_shape[0]), int(image_shape[1]))))

  def __call__(self, images: tf.Tensor) -> tf.Tensor:
    images = _to_float(images)
    if self._flip is not None:
      images = self._flip(images)
    return random_pad_and_crop(images, self._pad, self.config.fill_value)


class StrongAugment:
  """Strong view: N RandAugment ops per image at magnitude M, then Cutout (then optionally the weak jitter).

  Call it on a batch: each image draws its own ops. Give it the weak view of the images, as the official code
  does, so the strong view is a further distortion of the weak one.
  """

  def __init__(self, config: AugmentConfig, image_shape: Sequence[int]):
    self.config = config
    self.op_layers = [make_op(name, config.magnitude, config.fill_value) for name in config.ops]
    self._needs_partner = "SamplePairing" in config.ops
    self._pipeline = None
    if config.num_ops and self.op_layers:
      self._pipeline = keras_cv.layers.RandomAugmentationPipeline(
          layers=self.op_layers, augmentations_per_image=config.num_ops, rate=config.op_rate)
    self._cutout = None
    if config.cutout_fraction:
      c = config.cutout_fraction
      self._cutout = keras_cv.layers.RandomCutout(
          height_factor=(c, c), width_factor=(c, c), fill_mode="constant", fill_value=config.fill_value)
    self._jitter = WeakAugment(config, image_shape) if config.rejitter_strong else None

  def __call__(self, images: tf.Tensor) -> tf.Tensor:
    images = _to_float(images)
    if images.shape.rank != 4:
      raise ValueError(f"StrongAugment works on batches [B, H, W, C], got shape {images.shape}")
    if self._pipeline is not None:
      inputs = {"images": images}
      if self._needs_partner:
        inputs[PAIRING_KEY] = tf.roll(images, shift=1, axis=0)
      images = self._pipeline(inputs)["images"]
    if self._cutout is not None:
      images = self._cutout(images)
    if self._jitter is not None:
      images = self._jitter(images)
    return tf.clip_by_value(images, 0.0, 255.0)


def finish(images: tf.Tensor) -> tf.Tensor:
  """[0, 255] -> float32 [0, 1], the range the models take (they normalise internally)."""
  return tf.clip_by_value(_to_float(images), 0.0, 255.0) / 255.0


@dataclasses.dataclass(frozen=True)
class Views:
  """Batch-level view functions for one dataset: `weak(x)`, `strong(weak_x)`, `finish(view)`."""
  weak: Callable[[tf.Tensor], tf.Tensor]
  strong: Callable[[tf.Tensor], tf.Tensor]
  finish: Callable[[tf.Tensor], tf.Tensor]


def image_views(config: AugmentConfig, image_shape: Sequence[int]) -> Views:
  """The weak and strong image views of `config` for images of `image_shape`, and the [0, 1] scaling."""
  return Views(weak=WeakAugment(config, image_shape), strong=StrongAugment(config, image_shape), finish=finish)


def gaussian_noise_views(stddev: float = 0.0) -> Views:
  """Views for vector data (two moons): weak = identity, strong = identity plus N(0, stddev^2) noise."""
  if stddev < 0:
    raise ValueError(f"noise stddev must be >= 0, got {stddev}")

  def identity(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)

  def noisy(x: tf.Tensor) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return x + tf.random.normal(tf.shape(x), stddev=stddev) if stddev > 0 else x

  return Views(weak=identity, strong=noisy, finish=identity)

