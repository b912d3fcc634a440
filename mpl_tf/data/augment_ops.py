"""The two ops we wrote by hand: SamplePairing (in neither keras-cv 0.9 nor Keras 3.15) and pad-and-crop.

Every other op of Table 5 comes from keras-cv (`AutoContrast`, `Equalization`, `Posterization`, `Solarization`,
`RandomColorDegeneration`, `RandomContrast`, `RandomBrightness`, `RandomShear`, `RandomTranslation`,
`RandomRotation`, `RandomCutout`) or Keras 3 (`RandomInvert`, missing from keras-cv; `RandomSharpness`,
because keras-cv's only blurs while PIL's Sharpness, which RandAugment follows, also sharpens).

SamplePairing (Inoue 2018) blends an image with another training image. keras-cv's
`RandomAugmentationPipeline` hands each op one image at a time, so the partner travels with the image in the
input dict under `PAIRING_KEY`; keras-cv layers pass keys they do not know through unchanged, so the partner
survives the ops applied before this one. Called on a plain batch, the partner of image i is image i-1.

Pad-and-crop (the weak view's translation) exists as keras-cv's `RandomCrop` after a `tf.pad`, but that layer
draws continuous offsets and resamples with `crop_and_resize`, whose grid spacing is not one pixel: on 8x8
digits it duplicates or drops rows instead of shifting. `random_pad_and_crop` shifts by whole pixels.
"""
from typing import Any, Dict, Optional

import keras_cv
import tensorflow as tf

PAIRING_KEY = "pairing_images"


class SamplePairing(keras_cv.layers.BaseImageAugmentationLayer):
  """Blends each image with its partner: `(1 - weight) * image + weight * partner`.

  The label is left alone (as in AutoAugment's use of SamplePairing), so `weight` must stay below 0.5 for
  the image to remain mostly itself; RandAugment's magnitude sets it.

  Args:
    weight: blend weight of the partner image, in [0, 0.5].
    value_range: the images' value range, used to clip the result.
  """

  def __init__(self, weight: float, value_range=(0, 255), **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= weight <= 0.5:
      raise ValueError(f"SamplePairing weight must be in [0, 0.5], got {weight}")
    self.weight = float(weight)
    self.value_range = tuple(value_range)
    # The partner lives beside the image in the inputs dict: map per image, never vectorize.
    self.auto_vectorize = False

  def _batch_augment(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
    if PAIRING_KEY not in inputs:
      inputs = dict(inputs)
      inputs[PAIRING_KEY] = tf.roll(inputs["images"], shift=1, axis=0)
    return super()._batch_augment(inputs)

  def _augment(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
    partner: Optional[tf.Tensor] = inputs.get(PAIRING_KEY)
    if partner is None:
      raise ValueError(
          f"SamplePairing needs a partner image under the key '{PAIRING_KEY}' when called on a single image; "
          "call it on a batch, or pass {'images': x, '" + PAIRING_KEY + "': partner}")
    image = inputs["images"]
    partner = tf.cast(partner, image.dtype)
    mixed = (1.0 - self.weight) * image + self.weight * partner
    result = dict(inputs)
    result["images"] = tf.clip_by_value(mixed, self.value_range[0], self.value_range[1])
    return result

  def get_config(self):
    config = super().get_config()
    config.update({"weight": self.weight, "value_range": self.value_range})
    return config


def random_pad_and_crop(images: tf.Tensor, pad: int, fill_value: float = 0.0) -> tf.Tensor:
  """Pads a batch [B, H, W, C] by `pad` pixels and crops each image back at its own random integer offset.

  Equivalent to translating every image by (dy, dx), each uniform in [-pad, pad], filling with `fill_value`.
  """
  if pad <= 0:
    return images
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=fill_value)
  top = tf.random.uniform([batch, 1], 0, 2 * pad + 1, dtype=tf.int32)
  left = tf.random.uniform([batch, 1], 0, 2 * pad + 1, dtype=tf.int32)
  rows = top + tf.range(height)[tf.newaxis, :]
  cols = left + tf.range(width)[tf.newaxis, :]
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
  cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
  return tf.ensure_shape(cropped, images.shape)
