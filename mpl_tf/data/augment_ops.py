"""The image ops of the weak and strong views, as pure functions of a batch and per-image random draws.

Every op takes images float32 [B, H, W, C] in [0, 255] and, where it is random, `u`: float32 [B, k] uniform
draws in [0, 1) that the caller made with TensorFlow's stateless ops from each example's own seed
(`augment.py`). No op here draws anything: an image's result is a function of the image and its draws alone,
so a view does not depend on which reader, worker or parallel call computed it, and a `tf.data` pipeline of
them holds no stateful random op (its symbolic checkpoint is then complete).

Why not keras-cv / Keras 3 layers (which the views used before): they draw from a `SeedGenerator` (a variable:
a stateful op inside a parallel `tf.data` map, so the same seed gave other views run to run, and the iterator
checkpoint could not save it) and take no per-call seed; their per-transformation methods are internal APIs
whose formats changed between releases. The ops are small, so they are written here against the reference
that defines them, PIL's `ImageOps` / `ImageEnhance` (RandAugment's ops are PIL's), and tested against PIL
(tests/data/test_augment_ops.py).
"""
import math

import tensorflow as tf

MAX = 255.0


def _per_image(values: tf.Tensor) -> tf.Tensor:
  """[B] -> [B, 1, 1, 1], to broadcast a per-image parameter over its image."""
  return tf.reshape(values, [-1, 1, 1, 1])


def _grey(images: tf.Tensor) -> tf.Tensor:
  """ITU-R 601-2 luma (PIL's "L" conversion) [B, H, W, 1]; a one-channel image is its own grey."""
  if images.shape[-1] == 1:
    return images
  return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _blend(degenerate: tf.Tensor, images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's enhancer: degenerate + factor * (image - degenerate), clipped; factor [B] (1 = the image)."""
  return tf.clip_by_value(degenerate + _per_image(factor) * (images - degenerate), 0.0, MAX)


def _to_levels(images: tf.Tensor) -> tf.Tensor:
  """The 8-bit levels PIL's point ops work on: int32 in [0, 255]."""
  return tf.cast(tf.clip_by_value(tf.round(images), 0.0, MAX), tf.int32)


# --- point ops (no randomness) ---------------------------------------------------------------------------------
def invert(images: tf.Tensor) -> tf.Tensor:
  return MAX - images


def solarize(images: tf.Tensor, threshold: float) -> tf.Tensor:
  """PIL's solarize: every value at or above `threshold` is inverted."""
  return tf.where(images >= threshold, MAX - images, images)


def posterize(images: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` high bits of each 8-bit level."""
  shift = 8 - int(bits)
  levels = tf.bitwise.left_shift(tf.bitwise.right_shift(_to_levels(images), shift), shift)
  return tf.cast(levels, tf.float32)


def autocontrast(images: tf.Tensor) -> tf.Tensor:
  """Each channel of each image stretched so its darkest value is 0 and its lightest 255 (flat channels kept)."""
  low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
  high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
  span = high - low
  stretched = (images - low) * (MAX / tf.where(span > 0, span, 1.0))
  return tf.where(span > 0, tf.clip_by_value(stretched, 0.0, MAX), images)


def equalize(images: tf.Tensor) -> tf.Tensor:
  """PIL's equalize, per channel of each image: its 8-bit histogram mapped through its cumulative counts.

  lut[i] = (step // 2 + #values below i) // step with step = (#values - #values at the top level) // 255;
  step 0 (one level, or nearly so) leaves the channel as it is.
  """
  shape = tf.shape(images)
  channels = images.shape[-1]
  levels = tf.reshape(tf.transpose(_to_levels(images), [0, 3, 1, 2]), [shape[0] * channels, -1])
  hist = tf.math.bincount(levels, minlength=256, maxlength=256, axis=-1, dtype=tf.int32)
  top = tf.gather(hist, tf.reduce_max(levels, axis=1), batch_dims=1)
  step = (tf.shape(levels)[1] - top) // 255
  below = tf.cumsum(hist, axis=1, exclusive=True)
  lut = tf.minimum((step[:, None] // 2 + below) // tf.maximum(step, 1)[:, None], 255)
  lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
  out = tf.gather(lut, levels, batch_dims=1)
  out = tf.transpose(tf.reshape(out, [shape[0], channels, shape[1], shape[2]]), [0, 2, 3, 1])
  return tf.cast(out, tf.float32)


# --- enhancers and colour (factor per image) -------------------------------------------------------------------
def color(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's Color: factor 1 keeps the image, 0 gives its grey version."""
  return _blend(tf.broadcast_to(_grey(images), tf.shape(images)), images, factor)


def contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's Contrast: towards (factor < 1) or away from the image's mean grey level."""
  mean = tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True)
  return _blend(mean, images, factor)


def sharpness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL's Sharpness: factor 0 gives the smoothed image (3x3 kernel 1-5-1 over 13, border kept), 2 sharpens."""
  channels = images.shape[-1]
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  # SAME, not VALID + pad: on an empty batch (no image drew this op) VALID's output kept the input's size.
  smooth = tf.nn.depthwise_conv2d(images, kernel, strides=[1, 1, 1, 1], padding="SAME")
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  inner = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
  degenerate = tf.where(inner[None, :, :, None], smooth, images)
  return _blend(degenerate, images, factor)


def brightness(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  """Adds `delta` [B] (in levels) to every value."""
  return tf.clip_by_value(images + _per_image(delta), 0.0, MAX)


def sample_pairing(images: tf.Tensor, partners: tf.Tensor, weight: float) -> tf.Tensor:
  """SamplePairing (Inoue 2018): (1 - weight) * image + weight * its partner; the label stays the image's."""
  return tf.clip_by_value((1.0 - weight) * images + weight * partners, 0.0, MAX)


# --- geometry: one projective transform per image --------------------------------------------------------------
def transform(images: tf.Tensor, transforms: tf.Tensor, fill_value: float) -> tf.Tensor:
  """Resamples each image (bilinear) at input point T(output point); outside the image: `fill_value`.

  transforms: float32 [B, 8], (a0, a1, a2, b0, b1, b2, 0, 0): x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2.
  """
  shape = tf.shape(images)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=shape[1:3], fill_value=tf.constant(fill_value, tf.float32),
      interpolation="BILINEAR", fill_mode="CONSTANT")


def _affine(a0, a1, a2, b0, b1, b2) -> tf.Tensor:
  zero = tf.zeros_like(a0)
  return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def _centre(images: tf.Tensor):
  shape = tf.cast(tf.shape(images), tf.float32)
  return (shape[2] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0


def rotate(images: tf.Tensor, degrees: tf.Tensor, fill_value: float) -> tf.Tensor:
  """Rotates each image by `degrees` [B] about its centre."""
  cx, cy = _centre(images)
  theta = degrees * (math.pi / 180.0)
  cos, sin = tf.cos(theta), tf.sin(theta)
  return transform(images, _affine(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy),
                   fill_value)


def shear(images: tf.Tensor, amount: tf.Tensor, axis: str, fill_value: float) -> tf.Tensor:
  """Shears along x (rows slide sideways in proportion to their distance from the centre) or y, by `amount` [B]."""
  cx, cy = _centre(images)
  one, zero = tf.ones_like(amount), tf.zeros_like(amount)
  if axis == "x":
    return transform(images, _affine(one, amount, -amount * cy, zero, one, zero), fill_value)
  return transform(images, _affine(one, zero, zero, amount, one, -amount * cx), fill_value)


def translate(images: tf.Tensor, pixels: tf.Tensor, axis: str, fill_value: float) -> tf.Tensor:
  """Moves each image by `pixels` [B] (may be fractional) along x or y."""
  one, zero = tf.ones_like(pixels), tf.zeros_like(pixels)
  if axis == "x":
    return transform(images, _affine(one, zero, -pixels, zero, one, zero), fill_value)
  return transform(images, _affine(one, zero, zero, zero, one, -pixels), fill_value)


# --- the weak view's ops and Cutout ----------------------------------------------------------------------------
def flip(images: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
  """Mirrors (left-right) the images whose draw `u` [B] is below 1/2."""
  return tf.where(_per_image(u) < 0.5, tf.reverse(images, axis=[2]), images)


def pad_and_crop(images: tf.Tensor, pad: int, fill_value: float, u_rows: tf.Tensor, u_cols: tf.Tensor) -> tf.Tensor:
  """Translates each image by whole pixels (dy, dx), each in [-pad, pad] from its draws, filling with `fill_value`.

  keras-cv's `RandomCrop` after a pad would do it with continuous offsets resampled by `crop_and_resize`, whose
  grid is not one pixel apart: on 8x8 digits it duplicates or drops rows instead of shifting.
  """
  if pad <= 0:
    return images
  shape = tf.shape(images)
  height, width = shape[1], shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=fill_value)
  choices = float(2 * pad + 1)
  top = tf.minimum(tf.cast(u_rows * choices, tf.int32), 2 * pad)[:, None]
  left = tf.minimum(tf.cast(u_cols * choices, tf.int32), 2 * pad)[:, None]
  cropped = tf.gather(padded, top + tf.range(height)[None, :], axis=1, batch_dims=1)
  cropped = tf.gather(cropped, left + tf.range(width)[None, :], axis=2, batch_dims=1)
  return tf.ensure_shape(cropped, images.shape)


def cutout(images: tf.Tensor, fraction: float, fill_value: float, u_rows: tf.Tensor, u_cols: tf.Tensor) -> tf.Tensor:
  """Fills a square of `fraction` of each side with `fill_value`, centred at a pixel drawn uniformly (the square
  is cut off at the border, as in the official code and keras-cv's RandomCutout)."""
  shape = tf.shape(images)
  height, width = shape[1], shape[2]
  size_h = tf.cast(tf.round(fraction * tf.cast(height, tf.float32)), tf.int32)
  size_w = tf.cast(tf.round(fraction * tf.cast(width, tf.float32)), tf.int32)
  centre_y = tf.minimum(tf.cast(u_rows * tf.cast(height, tf.float32), tf.int32), height - 1)
  centre_x = tf.minimum(tf.cast(u_cols * tf.cast(width, tf.float32), tf.int32), width - 1)
  top, left = centre_y - size_h // 2, centre_x - size_w // 2
  rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + size_h)[:, None])
  in_cols = (cols >= left[:, None]) & (cols < (left + size_w)[:, None])
  inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]
  return tf.where(inside, tf.constant(fill_value, images.dtype), images)
