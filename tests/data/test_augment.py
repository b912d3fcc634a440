"""Augmentation ops and views, each eagerly and inside tf.data (graph mode; the two have differed in Keras)."""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf.data import augment
from mpl_tf.data.augment_ops import PAIRING_KEY, SamplePairing

RNG = np.random.default_rng(0)
RGB = tf.constant(RNG.uniform(0, 255, size=(16, 32, 32, 3)), tf.float32)
GREY = tf.constant(RNG.uniform(0, 255, size=(16, 8, 8, 1)), tf.float32)


def _run(fn, images, mode):
  """Applies `fn` to a batch eagerly or as a tf.data map."""
  if mode == "eager":
    return fn(images)
  return next(iter(tf.data.Dataset.from_tensors(images).map(fn)))


def _check_image_batch(out, like):
  assert out.dtype == tf.float32
  assert out.shape == like.shape
  out = out.numpy()
  assert np.all(np.isfinite(out)) and out.min() >= -1e-3 and out.max() <= 255 + 1e-3


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
@pytest.mark.parametrize("name", augment.ALL_OPS)
def test_op_keeps_dtype_shape_and_range(name, mode):
  op = augment.make_op(name, 16.0)
  _check_image_batch(_run(op, RGB, mode), RGB)
  if name in augment.DIGITS_OPS:
    _check_image_batch(_run(op, GREY, mode), GREY)


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
@pytest.mark.parametrize("name", [op for op in augment.ALL_OPS if op not in augment.MAGNITUDE_FREE_OPS])
def test_magnitude_changes_the_output(name, mode):
  images = tf.concat([RGB, RGB], axis=0)
  change = {}
  for magnitude in (2.0, 10.0):
    out = _run(augment.make_op(name, magnitude), images, mode)
    change[magnitude] = float(tf.reduce_mean(tf.abs(out - images)))
  assert change[10.0] > change[2.0] + 0.5, change


def test_magnitude_free_ops_are_the_documented_ones():
  for name in augment.ALL_OPS:
    assert (augment.op_parameters(name, 10.0) == {}) == (name in augment.MAGNITUDE_FREE_OPS)


def test_table5_op_lists():
  assert len(augment.CIFAR10_OPS) == 15 and len(augment.SVHN_OPS) == 12
  assert set(augment.CIFAR10_OPS) - set(augment.SVHN_OPS) == {"Rotate", "SamplePairing", "TranslateX"}
  assert set(augment.SVHN_OPS) <= set(augment.CIFAR10_OPS)
  assert "Color" not in augment.DIGITS_OPS and "Invert" not in augment.DIGITS_OPS


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_images_in_one_batch_draw_different_ops(mode):
  config = augment.AugmentConfig(ops=("Invert", "Posterize"), num_ops=1, magnitude=10.0, cutout_fraction=0.0,
                                 rejitter_strong=False)
  strong = augment.StrongAugment(config, (32, 32, 3))
  images = tf.repeat(tf.round(RGB[:1]), 32, axis=0)
  out = _run(strong, images, mode).numpy()
  inverted = np.all(np.abs(out - (255.0 - images.numpy())) < 1e-3, axis=(1, 2, 3))
  posterized = np.all(np.abs(out - np.floor(images.numpy() / 16) * 16) < 1e-3, axis=(1, 2, 3))
  assert np.all(inverted | posterized)
  assert 0 < inverted.sum() < 32


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_weak_view_flips_only_where_allowed(mode):
  images = tf.repeat(RGB[:1], 32, axis=0)
  no_pad = dict(pad_fraction=0.0)
  flipped = _run(augment.WeakAugment(augment.AugmentConfig(flip=True, **no_pad), (32, 32, 3)), images, mode)
  is_flip = np.all(np.isclose(flipped.numpy(), images.numpy()[:, :, ::-1]), axis=(1, 2, 3))
  is_same = np.all(np.isclose(flipped.numpy(), images.numpy()), axis=(1, 2, 3))
  assert np.all(is_flip | is_same) and 0 < is_flip.sum() < 32
  kept = _run(augment.WeakAugment(augment.AugmentConfig(flip=False, **no_pad), (32, 32, 3)), images, mode)
  np.testing.assert_allclose(kept.numpy(), images.numpy())


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_digits_weak_view_is_a_one_pixel_translation(mode):
  config = augment.AugmentConfig(flip=False, pad_fraction=0.125, fill_value=0.0, ops=augment.DIGITS_OPS)
  images = tf.repeat(GREY[:1], 32, axis=0)
  out = _run(augment.WeakAugment(config, (8, 8, 1)), images, mode).numpy()
  padded = np.pad(images.numpy()[0], [(1, 1), (1, 1), (0, 0)])
  shifts = [padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
  matches = [[np.allclose(o, s) for s in shifts] for o in out]
  assert all(any(m) for m in matches)
  assert len({tuple(m) for m in matches}) > 1  # different images, different offsets


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_views_finish_in_unit_range(mode):
  views = augment.image_views(augment.AugmentConfig(), (32, 32, 3))
  weak = _run(lambda x: views.finish(views.weak(x)), RGB, mode)
  strong = _run(lambda x: views.finish(views.strong(views.weak(x))), RGB, mode)
  for out in (weak, strong):
    assert out.dtype == tf.float32 and out.shape == RGB.shape
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
  assert float(tf.reduce_mean(tf.abs(strong - weak))) > 0.01


def test_strong_view_without_ops_is_the_weak_view():
  config = augment.AugmentConfig(num_ops=0, cutout_fraction=0.0, rejitter_strong=False)
  np.testing.assert_allclose(augment.StrongAugment(config, (32, 32, 3))(RGB).numpy(), RGB.numpy())


def test_sample_pairing_blends_with_the_partner():
  out = SamplePairing(weight=0.4)(RGB)
  np.testing.assert_allclose(out.numpy(), 0.6 * RGB.numpy() + 0.4 * np.roll(RGB.numpy(), 1, axis=0), atol=1e-3)
  partner = tf.zeros_like(RGB)
  out = SamplePairing(weight=0.25)({"images": RGB, PAIRING_KEY: partner})["images"]
  np.testing.assert_allclose(out.numpy(), 0.75 * RGB.numpy(), atol=1e-3)
  with pytest.raises(ValueError, match="needs a partner image"):
    SamplePairing(weight=0.25)(RGB[0])


def test_config_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown RandAugment op"):
    augment.AugmentConfig(ops=("Rotate", "Blur"))
  with pytest.raises(ValueError, match="magnitude"):
    augment.AugmentConfig(magnitude=-1)


def test_gaussian_noise_views():
  x = tf.ones((5, 2))
  quiet, noisy = augment.gaussian_noise_views(0.0), augment.gaussian_noise_views(0.5)
  np.testing.assert_array_equal(quiet.strong(x).numpy(), x.numpy())
  np.testing.assert_array_equal(noisy.weak(x).numpy(), x.numpy())
  assert float(tf.reduce_mean(tf.abs(noisy.strong(x) - x))) > 0.05
