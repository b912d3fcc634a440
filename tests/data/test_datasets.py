"""`build_dataset` end to end on offline data: digits, two moons, .npz and folders, and gin binding."""
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import experiment
from mpl_tf.data import augment, build_dataset, known_datasets


def test_digits_bundle_structure_and_counts():
  data = build_dataset("digits", batch_size=10, uda_ratio=2, eval_batch_size=128)
  assert (data.num_classes, data.input_shape) == (10, (8, 8, 1))
  assert (data.num_labeled, data.num_unlabeled, data.num_test) == (50, 1797 - 550, 500)
  assert data.validation is None and data.split_name == "digits.seed0"
  (x_l, y_l), (x_weak, x_strong) = next(iter(data.train))
  assert x_l.shape == (10, 8, 8, 1) and y_l.shape == (10,) and y_l.dtype == tf.int32
  assert x_weak.shape == x_strong.shape == (20, 8, 8, 1)
  for x in (x_l, x_weak, x_strong):
    assert x.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  sizes = [int(x.shape[0]) for x, _ in data.test]
  assert sum(sizes) == 500 and max(sizes) == 128
  labels = np.concatenate([y.numpy() for _, y in data.test])
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 50))


def test_digits_split_follows_the_seed():
  a, b, c = (build_dataset("digits", seed=s, augment_num_ops=0) for s in (1, 1, 2))  # no ops: quick to trace
  assert a.split_digest == b.split_digest != c.split_digest
  assert c.split_name == "digits.seed2"  # non-default counts are in the name: see the gin test


def test_unknown_name_lists_known_datasets():
  with pytest.raises(ValueError, match="unknown dataset 'cifar100'; known datasets: .*cifar10_4k.*digits"):
    build_dataset("cifar100")
  expected = {"svhn_1k", "cifar10_4k", "imagenet_10pct", "digits", "two_moons", "folder", "npz"}
  assert expected <= set(known_datasets())


def test_labeled_count_that_cannot_be_balanced():
  with pytest.raises(ValueError, match="num_labeled=55 cannot be split evenly over 10 classes"):
    build_dataset("digits", num_labeled=55)


def _constant_images_npz(path, n=60, side=8):
  """Image i is filled with the value 2 + 4 * i (distinct per image), labels i % 3."""
  values = (2 + 4 * np.arange(n)).astype(np.uint8)
  x = np.broadcast_to(values[:, None, None, None], (n, side, side, 3)).copy()
  np.savez(path, x_train=x[:48], y_train=np.arange(48) % 3, x_test=x[48:], y_test=np.arange(48, n) % 3,
           x_unlabeled=x[:12] + 1)
  return path


def test_both_views_are_of_the_same_image(tmp_path):
  path = _constant_images_npz(str(tmp_path / "constant.npz"))
  data = build_dataset("npz", path=path, num_labeled=12, batch_size=4, uda_ratio=4, augment_num_ops=0,
                       cutout_fraction=0.0, flip=False)
  assert data.num_unlabeled == 36 + 12 and data.num_test == 12 and data.num_classes == 3
  _, (weak, strong) = next(iter(data.train))
  centre = lambda x: np.round(x.numpy()[:, 4, 4, 0] * 255)  # pad-and-crop by 1 px never moves the centre away
  np.testing.assert_array_equal(centre(weak), centre(strong))
  assert len(set(centre(weak))) > 1


def test_folder_dataset_holds_out_a_test_set(tmp_path):
  for c in ("a", "b"):
    for i in range(10):
      os.makedirs(tmp_path / "train" / c, exist_ok=True)
      white = tf.fill([8, 8, 1], tf.constant(255, tf.uint8))
      tf.io.write_file(str(tmp_path / "train" / c / f"{i}.png"), tf.io.encode_png(white))
  os.makedirs(tmp_path / "unlabeled")
  for i in range(5):
    tf.io.write_file(str(tmp_path / "unlabeled" / f"{i}.jpg"), tf.io.encode_jpeg(tf.zeros([8, 8, 1], tf.uint8)))
  data = build_dataset("folder", path=str(tmp_path / "train"), unlabeled_path=str(tmp_path / "unlabeled"),
                       batch_size=2, augment_ops=["Brightness", "Solarize"])
  assert (data.num_labeled, data.num_unlabeled, data.num_test) == (16, 5, 4)
  assert data.input_shape == (8, 8, 1) and data.class_names == ("a", "b")
  (x_l, _), (weak, strong) = next(iter(data.train))
  assert x_l.shape == (2, 8, 8, 1) and strong.shape == (2, 8, 8, 1)
  with pytest.raises(ValueError, match="no unlabeled examples are left"):
    build_dataset("folder", path=str(tmp_path / "train"))


def test_two_moons_through_the_same_interface():
  data = build_dataset("two_moons", batch_size=6, uda_ratio=4)
  assert (data.num_classes, data.input_shape, data.num_labeled, data.num_unlabeled) == (2, (2,), 6, 1994)
  (x_l, y_l), (weak, strong) = next(iter(data.train))
  assert x_l.shape == (6, 2) and x_l.dtype == tf.float32 and y_l.dtype == tf.int32
  np.testing.assert_array_equal(weak.numpy(), strong.numpy())  # no noise by default
  assert sum(int(x.shape[0]) for x, _ in data.test) == 2000  # accuracy on all points, as in the paper
  noisy = build_dataset("two_moons", batch_size=6, noise_stddev=0.3)
  _, (weak, strong) = next(iter(noisy.train))
  assert 0.05 < float(tf.reduce_mean(tf.abs(strong - weak))) < 1.0


def test_gin_binds_the_builder():
  with gin.unlock_config():
    gin.parse_config(["build_dataset.name = 'digits'", "build_dataset.num_labeled = 100",
                      "build_dataset.seed = 3", "build_dataset.augment_num_ops = 1"])
  try:
    data = experiment.build_dataset()  # pylint: disable=no-value-for-parameter  # registered for gin there
    assert data.split_name == "digits@100.seed3" and data.num_labeled == 100
    assert next(iter(data.train))[0][0].shape == (64, 8, 8, 1)
  finally:
    gin.clear_config()


def _digit_like_npz(path, n=40, side=12):
  """Light strokes on a black background (like digits, scans), with a bright top-left corner in every image."""
  rng = np.random.default_rng(0)
  x = np.zeros((n, side, side, 1), np.uint8)
  x[:, 3:9, 5:7] = 255  # a vertical bar
  x[:, 0, 0] = 255      # one bright border pixel: the median must not move
  x[:, 4:6, 2:4] = rng.integers(100, 200, size=(n, 2, 2, 1))
  np.savez(path, x_train=x[:30], y_train=np.arange(30) % 2, x_test=x[30:], y_test=np.arange(30, n) % 2)
  return path


def test_own_data_defaults_do_no_harm_and_are_recorded(tmp_path, caplog):
  """No flips, no inverting ops, a quarter-side Cutout, and the background colour as fill (0 here, not CIFAR's
  grey 128); the resolved settings are logged and carried by the bundle (the run writes them)."""
  path = _digit_like_npz(str(tmp_path / "strokes.npz"))
  with caplog.at_level("INFO"):
    data = build_dataset("npz", path=path, num_labeled=10, batch_size=2)
  config = data.augmentation
  assert not config.flip and config.fill_value == 0.0 and config.cutout_fraction == 0.25
  assert not {"Invert", "Solarize", "SamplePairing", "Color"} & set(config.ops)
  assert "horizontal flips off" in caplog.text and "fill value 0" in caplog.text
  # Every default can still be overridden, the fill value included.
  data = build_dataset("npz", path=path, num_labeled=10, batch_size=2, flip=True, fill_value=128.0,
                       augment_ops=["Invert"])
  assert data.augmentation.flip and data.augmentation.fill_value == 128.0 and data.augmentation.ops == ("Invert",)
  # The paper's benchmarks keep theirs.
  assert build_dataset("digits").augmentation.fill_value == 0.0


def test_border_fill_is_the_median_of_the_outer_ring():
  white_frame = np.zeros((6, 6, 3), np.float32)
  white_frame[0], white_frame[-1], white_frame[:, 0], white_frame[:, -1] = 250, 250, 250, 250
  white_frame[2:4, 2:4] = 10  # the inside does not count
  assert augment.border_fill([white_frame, white_frame]) == 250.0
  mixed = [np.full((4, 4, 1), 30.0), np.full((5, 3, 1), 30.0), np.full((4, 4, 1), 200.0)]
  assert augment.border_fill(mixed) == 30.0
  with pytest.raises(ValueError, match="at least one image"):
    augment.border_fill([])
