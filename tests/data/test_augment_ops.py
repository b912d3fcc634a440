"""The image ops against their definitions: PIL's ImageOps / ImageEnhance (RandAugment's ops are PIL's), exact
geometry on whole-pixel moves, and the weak view's and Cutout's pixel bookkeeping by hand."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from mpl_tf.data import augment_ops as ops

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (4, 12, 12, 3)).astype(np.uint8)
RGB[1] = RGB[1] // 4 + 60  # a low-contrast image: autocontrast and equalize have work to do
GREY = RNG.integers(30, 200, (4, 8, 8, 1)).astype(np.uint8)
GREY[2] = 77  # a flat image: autocontrast and equalize must leave it alone


def _pil(fn, batch):
  """`fn` applied by PIL to every uint8 image of the batch; float32 [B, H, W, C]."""
  out = []
  for image in batch:
    result = np.asarray(fn(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)), np.float32)
    out.append(result[..., None] if result.ndim == 2 else result)
  return np.stack(out)


def _ours(fn, batch, *args):
  return fn(tf.constant(batch, tf.float32), *args).numpy()


@pytest.mark.parametrize("batch", [RGB, GREY], ids=["rgb", "grey"])
def test_point_ops_equal_pil_exactly(batch):
  np.testing.assert_array_equal(_ours(ops.equalize, batch), _pil(ImageOps.equalize, batch))
  np.testing.assert_array_equal(_ours(ops.posterize, batch, 3), _pil(lambda i: ImageOps.posterize(i, 3), batch))
  np.testing.assert_array_equal(_ours(ops.solarize, batch, 100.0), _pil(lambda i: ImageOps.solarize(i, 100), batch))
  np.testing.assert_array_equal(_ours(ops.invert, batch), _pil(ImageOps.invert, batch))


@pytest.mark.parametrize("batch", [RGB, GREY], ids=["rgb", "grey"])
def test_autocontrast_and_enhancers_equal_pil_up_to_its_rounding(batch):
  # PIL computes in 8-bit integers (and rounds its grey mean); ours in float: at most about one level apart.
  np.testing.assert_allclose(_ours(ops.autocontrast, batch), _pil(ImageOps.autocontrast, batch), atol=1.0)
  n = len(batch)
  for factor in (0.0, 0.3, 1.0, 1.7):
    f = tf.fill([n], factor)
    for ours, theirs in ((ops.contrast, ImageEnhance.Contrast), (ops.sharpness, ImageEnhance.Sharpness),
                         (ops.color, ImageEnhance.Color)):
      expected = _pil(lambda i, e=theirs: e(i).enhance(factor), batch)
      np.testing.assert_allclose(_ours(ours, batch, f), expected, atol=1.3, err_msg=f"{ours.__name__} {factor}")


def test_enhancers_take_one_factor_per_image():
  batch = tf.constant(RGB, tf.float32)
  factors = tf.constant([1.0, 0.0, 1.0, 0.5])
  out = ops.contrast(batch, factors).numpy()
  np.testing.assert_allclose(out[[0, 2]], RGB[[0, 2]], atol=1e-3)  # factor 1: the image itself
  assert np.abs(out[1] - out[1].mean()).max() < 1e-3  # factor 0: flat at the mean grey


def test_geometry_on_whole_pixels_is_exact():
  batch = tf.constant(RGB, tf.float32)
  n = len(RGB)
  np.testing.assert_array_equal(ops.rotate(batch, tf.zeros([n]), 0.0).numpy(), RGB)
  # cos(90 degrees) is 6e-8 in float32, not 0: a quarter turn is whole pixels up to that bilinear weight.
  np.testing.assert_allclose(ops.rotate(batch, tf.fill([n], 90.0), 0.0).numpy(), np.rot90(RGB, 1, axes=(1, 2)),
                             atol=1e-3)
  np.testing.assert_allclose(ops.rotate(batch, tf.fill([n], -90.0), 0.0).numpy(), np.rot90(RGB, -1, axes=(1, 2)),
                             atol=1e-3)
  right = np.pad(RGB, [(0, 0), (0, 0), (2, 0), (0, 0)], constant_values=9)[:, :, :12]
  np.testing.assert_array_equal(ops.translate(batch, tf.fill([n], 2.0), "x", 9.0).numpy(), right)
  up = np.pad(RGB, [(0, 0), (0, 1), (0, 0), (0, 0)], constant_values=9)[:, 1:]
  np.testing.assert_array_equal(ops.translate(batch, tf.fill([n], -1.0), "y", 9.0).numpy(), up)


def test_shear_moves_rows_in_proportion_to_their_distance_from_the_centre():
  image = np.zeros((1, 9, 9, 1), np.float32)
  image[0, :, 4] = 200.0  # a vertical line through the centre
  out = ops.shear(tf.constant(image), tf.constant([0.5]), "x", 0.0).numpy()[0, :, :, 0]
  # x_in = x + 0.5 (y - 4): row y shows the line at x = 4 - 0.5 (y - 4); rows 0 and 8 at columns 6 and 2.
  assert out[0, 6] == 200.0 and out[8, 2] == 200.0 and out[4, 4] == 200.0
  sheared_y = ops.shear(tf.constant(image), tf.constant([0.5]), "y", 0.0).numpy()[0, :, :, 0]
  np.testing.assert_array_equal(sheared_y[:, 4], image[0, :, 4, 0])  # the centre column stays


def test_flip_and_pad_and_crop_follow_their_draws():
  batch = tf.constant(GREY, tf.float32)
  flipped = ops.flip(batch, tf.constant([0.1, 0.9, 0.49, 0.5])).numpy()
  np.testing.assert_array_equal(flipped[[0, 2]], GREY[[0, 2], :, ::-1])
  np.testing.assert_array_equal(flipped[[1, 3]], GREY[[1, 3]])
  # pad 2: 5 offsets a side; draw u picks offset floor(5u) of the padded image, i.e. a shift of 2 - floor(5u).
  rows, cols = tf.constant([0.0, 0.99, 0.5, 0.3]), tf.constant([0.5, 0.0, 0.99, 0.5])
  out = ops.pad_and_crop(batch, 2, 7.0, rows, cols).numpy()
  padded = np.pad(GREY, [(0, 0), (2, 2), (2, 2), (0, 0)], constant_values=7)
  for i, (top, left) in enumerate([(0, 2), (4, 0), (2, 4), (1, 2)]):
    np.testing.assert_array_equal(out[i], padded[i, top:top + 8, left:left + 8])


def test_cutout_fills_the_square_around_its_drawn_centre_cut_at_the_border():
  batch = tf.constant(np.full((2, 8, 8, 1), 100.0, np.float32))
  out = ops.cutout(batch, 0.5, 0.0, tf.constant([0.5, 0.0]), tf.constant([0.5, 0.99])).numpy()[..., 0]
  expected = np.full((2, 8, 8), 100.0, np.float32)
  expected[0, 2:6, 2:6] = 0.0  # centre (4, 4), side 4
  expected[1, 0:2, 5:8] = 0.0  # centre (0, 7): cut off at the top and right
  np.testing.assert_array_equal(out, expected)


def test_sample_pairing_blends_with_the_given_partner():
  batch, partners = tf.constant(RGB, tf.float32), tf.constant(RGB[::-1], tf.float32)
  np.testing.assert_allclose(ops.sample_pairing(batch, partners, 0.25).numpy(),
                             0.75 * RGB + 0.25 * RGB[::-1].astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("name", ["equalize", "autocontrast", "sharpness", "rotate", "cutout"])
def test_ops_take_an_empty_batch(name):
  # A RandAugment round hands each op only the images that drew it: often none.
  empty = tf.zeros([0, 8, 8, 1])
  none = tf.zeros([0])
  calls = {"equalize": lambda: ops.equalize(empty), "autocontrast": lambda: ops.autocontrast(empty),
           "sharpness": lambda: ops.sharpness(empty, none), "rotate": lambda: ops.rotate(empty, none, 0.0),
           "cutout": lambda: ops.cutout(empty, 0.5, 0.0, none, none)}
  assert calls[name]().shape == (0, 8, 8, 1)
