"""Augmentation ops and views, each eagerly and inside tf.data (graph mode), driven by per-image draws."""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf.data import augment

RNG = np.random.default_rng(0)
RGB = tf.constant(RNG.uniform(0, 255, size=(16, 32, 32, 3)), tf.float32)
GREY = tf.constant(RNG.uniform(0, 255, size=(16, 8, 8, 1)), tf.float32)


def _draws(views_or_count, batch, seed=0):
  """Per-image draws as the pipeline makes them: `Views.draws` of seeds (seed, i), or plain uniforms [B, count]."""
  if isinstance(views_or_count, int):
    return tf.constant(np.random.default_rng(seed).uniform(size=(batch, views_or_count)), tf.float32)
  return tf.stack([views_or_count.draws(tf.constant([seed, i], tf.int64)) for i in range(batch)])


def _run(fn, images, draws, mode):
  """Applies `fn(images, draws)` eagerly or as a tf.data map."""
  if mode == "eager":
    return fn(images, draws)
  return next(iter(tf.data.Dataset.from_tensors((images, draws)).map(fn)))


def _check_image_batch(out, like):
  assert out.dtype == tf.float32
  assert out.shape == like.shape
  out = out.numpy()
  assert np.all(np.isfinite(out)) and out.min() >= -1e-3 and out.max() <= 255 + 1e-3


def _op(name, magnitude):
  fn = augment.op_function(name, magnitude)
  return lambda x, u: fn(x, u, tf.roll(x, 1, axis=0))


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
@pytest.mark.parametrize("name", augment.ALL_OPS)
def test_op_keeps_dtype_shape_and_range(name, mode):
  _check_image_batch(_run(_op(name, 16.0), RGB, _draws(2, 16), mode), RGB)
  if name in augment.DIGITS_OPS:
    _check_image_batch(_run(_op(name, 16.0), GREY, _draws(2, 16), mode), GREY)


@pytest.mark.parametrize("name", [op for op in augment.ALL_OPS if op not in augment.MAGNITUDE_FREE_OPS])
def test_magnitude_changes_the_output(name):
  images = tf.concat([RGB, RGB], axis=0)
  draws = _draws(2, 32)
  change = {}
  for magnitude in (2.0, 10.0):
    out = _op(name, magnitude)(images, draws)
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
  views = augment.image_views(config, (32, 32, 3))
  images = tf.repeat(tf.round(RGB[:1]), 32, axis=0)
  out = _run(views.strong, images, _draws(views, 32), mode).numpy()
  inverted = np.all(np.abs(out - (255.0 - images.numpy())) < 1e-3, axis=(1, 2, 3))
  posterized = np.all(np.abs(out - np.floor(images.numpy() / 16) * 16) < 1e-3, axis=(1, 2, 3))
  assert np.all(inverted | posterized)
  assert 0 < inverted.sum() < 32


def test_a_view_is_a_function_of_its_image_and_draws_alone():
  """An image's strong view does not depend on the rest of its batch (without SamplePairing), nor on eager vs
  tf.data: the batch split in two halves gives the same views bit for bit."""
  config = augment.AugmentConfig(ops=augment.SVHN_OPS, magnitude=16.0)
  views = augment.image_views(config, (32, 32, 3))
  draws = _draws(views, 16, seed=3)

  def both(x, d):
    return views.strong(views.weak(x, d), d)

  whole = _run(both, RGB, draws, "tf.data").numpy()
  halves = np.concatenate([both(RGB[:7], draws[:7]).numpy(), both(RGB[7:], draws[7:]).numpy()])
  np.testing.assert_array_equal(halves, whole)
  np.testing.assert_array_equal(_run(both, RGB, draws, "tf.data").numpy(), whole)
  assert not np.array_equal(both(RGB, _draws(views, 16, seed=4)).numpy(), whole)


def test_views_draw_from_the_example_seed_only():
  views = augment.image_views(augment.AugmentConfig(), (32, 32, 3))
  seed = tf.constant([5, 9], tf.int64)
  first = views.draws(seed).numpy()
  assert first.shape == (views.num_draws,) and 0.0 <= first.min() and first.max() < 1.0
  np.testing.assert_array_equal(views.draws(seed).numpy(), first)
  assert not np.array_equal(views.draws(tf.constant([5, 10], tf.int64)).numpy(), first)


def test_sample_pairing_partner_is_another_image_of_the_batch():
  config = augment.AugmentConfig(ops=("SamplePairing",), num_ops=1, magnitude=10.0, cutout_fraction=0.0,
                                 rejitter_strong=False)  # weight 0.4
  views = augment.image_views(config, (8, 8, 1))
  images = tf.constant(np.arange(16, dtype=np.float32)[:, None, None, None] * 10.0 * np.ones((1, 8, 8, 1)),
                       tf.float32)
  out = views.strong(images, _draws(views, 16)).numpy()[:, 0, 0, 0]
  partners = (out - 0.6 * images.numpy()[:, 0, 0, 0]) / 0.4 / 10.0
  np.testing.assert_allclose(partners, np.round(partners), atol=1e-3)
  partners = np.round(partners).astype(int)
  assert np.all(partners != np.arange(16)) and np.all((0 <= partners) & (partners < 16))
  assert len(set(partners - np.arange(16))) > 2  # drawn per image, not one roll of the batch


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_weak_view_flips_only_where_allowed(mode):
  images = tf.repeat(RGB[:1], 32, axis=0)
  no_pad = dict(pad_fraction=0.0)
  draws = _draws(augment.WEAK_DRAWS, 32)
  flipped = _run(augment.WeakAugment(augment.AugmentConfig(flip=True, **no_pad), (32, 32, 3)), images, draws, mode)
  is_flip = np.all(np.isclose(flipped.numpy(), images.numpy()[:, :, ::-1]), axis=(1, 2, 3))
  is_same = np.all(np.isclose(flipped.numpy(), images.numpy()), axis=(1, 2, 3))
  assert np.all(is_flip | is_same) and 0 < is_flip.sum() < 32
  kept = _run(augment.WeakAugment(augment.AugmentConfig(flip=False, **no_pad), (32, 32, 3)), images, draws, mode)
  np.testing.assert_allclose(kept.numpy(), images.numpy())


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_digits_weak_view_is_a_one_pixel_translation(mode):
  config = augment.AugmentConfig(flip=False, pad_fraction=0.125, fill_value=0.0, ops=augment.DIGITS_OPS)
  images = tf.repeat(GREY[:1], 32, axis=0)
  out = _run(augment.WeakAugment(config, (8, 8, 1)), images, _draws(augment.WEAK_DRAWS, 32), mode).numpy()
  padded = np.pad(images.numpy()[0], [(1, 1), (1, 1), (0, 0)])
  shifts = [padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
  matches = [[np.allclose(o, s) for s in shifts] for o in out]
  assert all(any(m) for m in matches)
  assert len({tuple(m) for m in matches}) > 1  # different images, different offsets


@pytest.mark.parametrize("mode", ["eager", "tf.data"])
def test_views_finish_in_unit_range(mode):
  views = augment.image_views(augment.AugmentConfig(), (32, 32, 3))
  draws = _draws(views, 16)
  weak = _run(lambda x, d: views.finish(views.weak(x, d)), RGB, draws, mode)
  strong = _run(lambda x, d: views.finish(views.strong(views.weak(x, d), d)), RGB, draws, mode)
  for out in (weak, strong):
    assert out.dtype == tf.float32 and out.shape == RGB.shape
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
  assert float(tf.reduce_mean(tf.abs(strong - weak))) > 0.01


def test_strong_view_without_ops_is_the_weak_view():
  config = augment.AugmentConfig(num_ops=0, cutout_fraction=0.0, rejitter_strong=False)
  views = augment.image_views(config, (32, 32, 3))
  np.testing.assert_allclose(views.strong(RGB, _draws(views, 16)).numpy(), RGB.numpy())


def test_config_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown RandAugment op"):
    augment.AugmentConfig(ops=("Rotate", "Blur"))
  with pytest.raises(ValueError, match="magnitude"):
    augment.AugmentConfig(magnitude=-1)


def test_gaussian_noise_views():
  x = tf.ones((5, 2))
  quiet, noisy = augment.gaussian_noise_views(0.0), augment.gaussian_noise_views(0.5)
  draws = _draws(noisy, 5)
  np.testing.assert_array_equal(quiet.strong(x, draws).numpy(), x.numpy())
  np.testing.assert_array_equal(noisy.weak(x, draws).numpy(), x.numpy())
  np.testing.assert_allclose(noisy.strong(x, draws).numpy(), x.numpy() + 0.5 * draws.numpy(), atol=1e-6)
  assert float(tf.reduce_mean(tf.abs(noisy.strong(x, draws) - x))) > 0.05
