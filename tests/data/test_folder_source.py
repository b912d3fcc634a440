"""Image folders streamed from disk: resizing, corrupt files, channels, determinism, and no pixels in the graph."""
import json
import logging
import os
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf.data.folder_source import folder_source
from tests.data.test_sources import _png

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import benchmark_folder_source  # pylint: disable=wrong-import-position


def _values(dataset, count):
  """(first pixel value, label) of the first `count` elements of a `(image, label)` dataset."""
  return [(int(x[0, 0, 0]), int(y)) for x, y in dataset.take(count).as_numpy_iterator()]


def test_mixed_sizes_are_resized_to_image_size_and_keep_their_colour(tmp_path):
  sizes = {"cat": [(6, 6), (9, 7)], "dog": [(20, 13), (3, 5)]}
  for c, (name, shapes) in enumerate(sizes.items()):
    for i, size in enumerate(shapes):
      _png(str(tmp_path / name / f"{i}.png"), 50 + 100 * c + i, size=size)
  source = folder_source(str(tmp_path), image_size=(8, 8))
  assert source.image_shape == (8, 8, 3)
  images = [(x, y) for x, y in source.examples(np.arange(4)).as_numpy_iterator()]
  for (x, y), value in zip(images, (50, 51, 150, 151)):
    assert x.shape == (8, 8, 3) and x.dtype == np.uint8 and int(y) == (value - 50) // 100
    np.testing.assert_array_equal(x, value)  # a constant colour survives the antialiased resize exactly


def test_mixed_sizes_without_image_size_name_two_files(tmp_path):
  _png(str(tmp_path / "a" / "small.png"), 1, size=(4, 4))
  _png(str(tmp_path / "b" / "wide.png"), 2, size=(4, 9))
  with pytest.raises(ValueError, match="small.png is 4x4 but .*wide.png is 4x9; set build_dataset.image_size"):
    folder_source(str(tmp_path))


def test_corrupt_and_truncated_files_are_skipped_with_a_warning(tmp_path, caplog):
  for c, name in enumerate(("cat", "dog")):
    for i in range(3):
      _png(str(tmp_path / name / f"{i}.png"), 10 * (c + 1) + i)
  (tmp_path / "cat" / "noise.png").write_bytes(np.random.default_rng(0).bytes(500))
  whole = tf.io.encode_png(tf.fill([16, 16, 3], tf.constant(7, tf.uint8))).numpy()
  (tmp_path / "dog" / "truncated.png").write_bytes(whole[:len(whole) // 2])
  with caplog.at_level(logging.WARNING):
    source = folder_source(str(tmp_path))
  warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  assert "skipping 2 corrupt or unreadable image file(s) of 8" in warning
  assert "noise.png" in warning and "truncated.png" in warning
  np.testing.assert_array_equal(source.pool_labels, [0, 0, 0, 1, 1, 1])
  seen = set(_values(source.labeled_stream(np.arange(6), 0, 0), 30))
  assert seen == {(10, 0), (11, 0), (12, 0), (20, 1), (21, 1), (22, 1)}


def test_grayscale_and_rgb_give_three_channels_all_grayscale_one(tmp_path):
  _png(str(tmp_path / "mixed" / "a" / "grey.png"), 90, channels=1)
  _png(str(tmp_path / "mixed" / "a" / "rgba.png"), 40, channels=4)
  _png(str(tmp_path / "mixed" / "b" / "rgb.png"), 30, channels=3)
  source = folder_source(str(tmp_path / "mixed"))
  assert source.image_shape == (6, 6, 3)
  grey, rgba, _ = [x for x, _ in source.examples(np.arange(3)).as_numpy_iterator()]
  np.testing.assert_array_equal(grey, 90)
  np.testing.assert_array_equal(rgba, 40)
  _png(str(tmp_path / "grey" / "a" / "0.png"), 5, channels=1)
  _png(str(tmp_path / "grey" / "b" / "0.png"), 6, channels=1)
  assert folder_source(str(tmp_path / "grey")).image_shape == (6, 6, 1)


def test_streams_are_deterministic_for_a_seed(tmp_path):
  for i in range(30):
    _png(str(tmp_path / str(i % 3) / f"{i:02d}.png"), i, size=(2, 2))
  indices = np.arange(30)
  first = lambda seed: _values(folder_source(str(tmp_path)).labeled_stream(indices, seed, 0), 20)
  assert first(3) == first(3)
  assert first(3) != first(4)
  epochs = _values(folder_source(str(tmp_path)).labeled_stream(indices, 3, 0), 60)
  assert epochs[:30] != epochs[30:] and sorted(epochs[:30]) == sorted(epochs[30:])  # reshuffled every epoch


def _graph_bytes(root, side):
  rng = np.random.default_rng(side)
  for i in range(10):
    path = str(root / "c" / f"{i}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)))
  source = folder_source(str(root))
  return len(source.labeled_stream(np.arange(10), 0, 0)._as_serialized_graph().numpy())  # pylint: disable=protected-access


def test_no_pixels_in_the_graph(tmp_path):
  small, large = _graph_bytes(tmp_path / "a064", 64), _graph_bytes(tmp_path / "a256", 256)
  assert abs(small - large) < 100  # same paths' length, 16x the pixels (traced functions' names may differ)
  assert large < 10_000 < 10 * 256 * 256 * 3


def test_benchmark_runs_quick(tmp_path, capsys):
  values = flags.FlagValues()
  benchmark_folder_source.define_flags(values)
  values(["benchmark_folder_source.py", "--quick", f"--dir={tmp_path}"])
  result = benchmark_folder_source.run(values)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
  assert result["images"] == len([f for _, _, files in os.walk(tmp_path) for f in files])
  assert result["decoded_gigabytes"] >= 0.003 and result["batches_per_s"] > 0 and result["peak_rss_megabytes"] > 0
  assert 0 < result["graph_bytes"] < result["decoded_gigabytes"] * 1e9
