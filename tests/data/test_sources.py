"""Offline and bring-your-own sources: digits, .npz files and image folders, and their error messages."""
import os

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf.data import sources
from mpl_tf.data.folder_source import folder_source


def _png(path, value, size=(6, 6), channels=3):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = tf.fill(list(size) + [channels], tf.constant(value, tf.uint8))
  tf.io.write_file(path, tf.io.encode_png(image))


def _folder(root, classes=("cat", "dog"), per_class=3, **png):
  for c, name in enumerate(classes):
    for i in range(per_class):
      _png(os.path.join(root, name, f"{i}.png"), 10 * c + i, **png)
  return str(root)


def test_digits_are_real_8x8_images_scaled_to_255():
  source = sources.digits_source()
  assert source.image_shape == (8, 8, 1) and source.num_classes == 10 and len(source.pool_labels) == 1797
  x, y = next(iter(source.examples(np.arange(5)).batch(5)))
  assert x.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0
  assert float(tf.reduce_max(x)) > 200.0  # 16 -> 255
  np.testing.assert_array_equal(y.numpy(), source.pool_labels[:5])


def test_array_source_streams_are_infinite_and_cover_only_their_indices():
  x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
  source = sources.ArraySource("toy", x, np.arange(10) % 2, 2, x_extra=np.full((3, 1, 1, 1), 99.0, np.float32))
  labeled = [int(v.numpy().item()) for v, _ in source.labeled_stream(np.array([1, 4]), 0, 0).take(20)]
  assert set(labeled) == {1, 4}
  unlabeled = [float(v.numpy().item()) for v in source.unlabeled_stream(np.array([0, 2]), 0, 0).take(50)]
  assert set(unlabeled) == {0.0, 2.0, 99.0}


def test_npz_source(tmp_path):
  path = str(tmp_path / "data.npz")
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (40, 5, 5, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
           x_test=rng.integers(0, 256, (8, 5, 5, 3), dtype=np.uint8), y_test=np.arange(8) % 4,
           x_unlabeled=rng.integers(0, 256, (12, 5, 5, 3), dtype=np.uint8))
  source = sources.npz_source(path)
  assert source.num_classes == 4 and source.num_test == 8 and source.num_extra_unlabeled == 12
  assert source.image_shape == (5, 5, 3)


def test_npz_float_images_in_unit_range_are_rescaled(tmp_path):
  path = str(tmp_path / "unit.npz")
  np.savez(path, x_train=np.full((4, 3, 3), 0.5), y_train=[0, 1, 0, 1], x_test=np.ones((2, 3, 3)), y_test=[0, 1])
  source = sources.npz_source(path)
  x, _ = next(iter(source.examples(np.arange(4)).batch(4)))
  assert source.image_shape == (3, 3, 1)
  np.testing.assert_allclose(x.numpy(), 127.5)


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 0, 1]), "missing array\\(s\\) \\['x_test', 'y_test'\\]"),
    (dict(x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 0.5, 1], x_test=np.zeros((2, 3, 3)), y_test=[0, 1]),
     "y_train\\): labels must be integers; position 2 holds 0.5"),
    (dict(x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 0, -1], x_test=np.zeros((2, 3, 3)), y_test=[0, 1]),
     "outside \\[0, 2\\); the first is -1"),
    (dict(x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 0, 1], x_test=np.zeros((2, 4, 4)), y_test=[0, 1]),
     "'x_test' images have shape \\(4, 4, 1\\) but x_train images \\(3, 3, 1\\)"),
    (dict(x_train=np.full((4, 3, 3), 300.0), y_train=[0, 1, 0, 1], x_test=np.zeros((2, 3, 3)), y_test=[0, 1]),
     "must be in \\[0, 1\\] or \\[0, 255\\]"),
])
def test_npz_errors_name_the_file_and_problem(tmp_path, arrays, message):
  path = str(tmp_path / "bad.npz")
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message) as error:
    sources.npz_source(path)
  assert "bad.npz" in str(error.value)


def test_npz_labels_outside_given_num_classes(tmp_path):
  path = str(tmp_path / "five.npz")
  np.savez(path, x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 2, 5], x_test=np.zeros((2, 3, 3)), y_test=[0, 1])
  with pytest.raises(ValueError, match="five.npz \\(y_train\\).*outside \\[0, 3\\)"):
    sources.npz_source(path, num_classes=3)


def test_folder_source_reads_classes_test_and_unlabeled(tmp_path):
  root = _folder(tmp_path / "train")
  test = _folder(tmp_path / "test", per_class=2)
  _png(str(tmp_path / "unlabeled" / "deep" / "a.png"), 200)
  (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
  source = folder_source(root, test_path=test, unlabeled_path=str(tmp_path / "unlabeled"))
  assert source.class_names == ("cat", "dog") and source.num_classes == 2
  np.testing.assert_array_equal(source.pool_labels, [0, 0, 0, 1, 1, 1])
  assert source.num_test == 4 and source.num_extra_unlabeled == 1 and source.image_shape == (6, 6, 3)
  x, y = next(iter(source.examples(np.array([3])).batch(1)))
  assert int(y[0]) == 1 and int(x[0, 0, 0, 0]) == 10


def test_folder_resizes_mixed_sizes_when_asked(tmp_path):
  root = _folder(tmp_path / "train")
  _png(str(tmp_path / "train" / "dog" / "big.png"), 5, size=(9, 7))
  message = "mixed sizes: .*cat/0.png is 6x6 but .*big.png is 9x7; set build_dataset.image_size"
  with pytest.raises(ValueError, match=message):
    folder_source(root)
  assert folder_source(root, image_size=(4, 4)).image_shape == (4, 4, 3)


def test_folder_errors_name_the_folder_or_file(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=f"{empty} is empty: expected one sub-folder"):
    folder_source(str(empty))
  (empty / "cat").mkdir()
  with pytest.raises(ValueError, match="class folder .*cat is empty"):
    folder_source(str(empty))
  root = _folder(tmp_path / "corrupt")
  bad = tmp_path / "corrupt" / "dog" / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
  assert len(folder_source(root).pool_labels) == 6  # skipped (tests/data/test_folder_source.py)
  for name in os.listdir(tmp_path / "corrupt" / "dog"):
    if name != "broken.png":
      os.remove(tmp_path / "corrupt" / "dog" / name)
  with pytest.raises(ValueError, match="class folder .*dog: none of its 1 image files can be read"):
    folder_source(root)
  with pytest.raises(FileNotFoundError, match="no image folder at"):
    folder_source(str(tmp_path / "missing"))
  (tmp_path / "nothing").mkdir()
  with pytest.raises(ValueError, match="unlabeled folder .*nothing is empty"):
    folder_source(_folder(tmp_path / "ok"), unlabeled_path=str(tmp_path / "nothing"))


def test_shuffled_indices_give_every_iterator_the_same_epochs_each_a_permutation():
  """Two iterators of one stream (a mesh's per-device readers) see one sequence; each epoch is a permutation;
  the seed changes it. (A seed-generator shuffle gave each iterator its own order: tests/layout/test_layout.py.)"""
  from mpl_tf.data.sources import shuffled_indices  # pylint: disable=import-outside-toplevel
  indices = np.arange(10, 17)
  stream = shuffled_indices(indices, seed=3).batch(7)
  first, second = iter(stream), iter(stream)
  epochs = [next(first).numpy() for _ in range(4)]
  assert all(np.array_equal(e, next(second).numpy()) for e in epochs)
  assert all(sorted(e) == list(indices) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled every epoch
  other = next(iter(shuffled_indices(indices, seed=4).batch(7))).numpy()
  assert not np.array_equal(other, epochs[0])


# --- labels that used to train a wrong model silently (issue 27, item 1) ---------------------------------------------
def _npz(tmp_path, y_train, y_test, **declared):
  path = str(tmp_path / "own.npz")
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (len(y_train), 4, 4), dtype=np.uint8), y_train=y_train,
           x_test=rng.integers(0, 256, (len(y_test), 4, 4), dtype=np.uint8), y_test=y_test, **declared)
  return path


def test_npz_classes_left_empty_by_the_labels_are_an_error_naming_them(tmp_path):
  """A 7 in 4-class labels used to train an 8-class model with 4 empty classes, and exit 0."""
  with pytest.raises(ValueError, match=r"own.npz: y_train's labels are 0-3, 7, so classes 4-6 would have no "
                                       r"example; .*declare them in the .npz"):
    sources.npz_source(_npz(tmp_path, [0, 1, 2, 3, 7, 0], [0, 1]))


def test_npz_declared_classes_allow_gaps_and_name_the_classes(tmp_path):
  source = sources.npz_source(_npz(tmp_path, [0, 1, 2, 3, 7, 0], [0, 7], class_names=list("abcdefgh")))
  assert source.num_classes == 8 and source.class_names == tuple("abcdefgh")
  assert sources.npz_source(_npz(tmp_path, [0, 2, 2], [2], num_classes=5)).num_classes == 5
  with pytest.raises(ValueError, match=r"outside \[0, 5\); the first is 6 at position 2"):
    sources.npz_source(_npz(tmp_path, [0, 2, 6], [2], num_classes=5))


def test_a_test_class_unseen_in_training_is_an_error_naming_the_label_and_its_position(tmp_path):
  """It used to make a 5-class model of 4-class training data, silently."""
  with pytest.raises(ValueError, match=r"y_test\): 1 label\(s\) outside \[0, 4\); the first is 4 at position 2"):
    sources.npz_source(_npz(tmp_path, [0, 1, 2, 3], [0, 1, 4]))
  with pytest.raises(ValueError, match=r"y_test holds 2 label\(s\) of classes with no example in y_train \(classes "
                                       r"3\); the first is 3 at position 1"):
    sources.npz_source(_npz(tmp_path, [0, 1, 2, 0], [0, 3, 3], num_classes=4))


def test_blank_images_are_a_warning_with_a_count(tmp_path, caplog):
  path = str(tmp_path / "blank.npz")
  x = np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8)
  x[[1, 4]] = 0
  np.savez(path, x_train=x, y_train=[0, 1] * 3, x_test=np.zeros((2, 4, 4), np.uint8), y_test=[0, 1])
  sources.npz_source(path)
  warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("('x_train'): 2 blank image(s), every pixel one value (the first: 1, 4)" in m for m in warned), warned
  assert any("('x_test'): 2 blank image(s)" in m for m in warned), warned
  root = _folder(tmp_path / "train")  # every file of _folder is one colour
  caplog.clear()
  folder_source(root)
  assert any("6 blank image(s)" in r.getMessage() for r in caplog.records), caplog.records
