"""The export's signatures and metadata (`mpl_tf.export`) and `mpl-predict` (`mpl_tf.predict`) on a tiny untrained
CNN: folders of mixed-size images, a corrupt file, .npz arrays, CSV/JSON output, exit statuses."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from mpl_tf import export as export_lib
from mpl_tf.keras import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "eel")


def tiny_model():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 1))
  x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(model, export path): exported as mpl_tf.experiment.run does, off a mesh."""
  model = tiny_model()
  data = types.SimpleNamespace(input_shape=(8, 8, 1), class_names=CLASSES, split_name="toy.seed0", name="toy",
                               num_classes=3)
  path = str(tmp_path_factory.mktemp("run") / "export" / "student")
  assert export_lib.export_student(model, path, data, config="run.steps = 1\n") == path
  return model, path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """A folder of PNGs of mixed sizes and channels in nested sub-folders, and a .npz of 16x16 images."""
  root = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(0)
  shapes = {"a/small.png": (8, 8), "a/b/wide.png": (13, 21, 3), "a/b/c/big.png": (32, 32), "rgb.png": (32, 32, 3)}
  for name, shape in shapes.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name)
  (root / "a" / "notes.txt").write_text("not an image: skipped by the folder search")
  npz = root / "arrays.npz"
  np.savez(npz, x_test=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8))
  return root, npz


def predict(export_dir, *args):
  """`python -m mpl_tf.predict` as a user runs it (a new process: seconds of TensorFlow import each)."""
  return subprocess.run([sys.executable, "-m", "mpl_tf.predict", f"--export_dir={export_dir}", *map(str, args)],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def predict_here(capsys, export_dir, *args):
  """The same in this process (fast): flags parsed as `run` parses them, `main` called, its exit status kept."""
  from mpl_tf import predict as predict_lib  # pylint: disable=import-outside-toplevel
  argv = ["mpl-predict", f"--export_dir={export_dir}", *map(str, args)]
  capsys.readouterr()
  try:
    status = predict_lib.main(predict_lib._parse_flags(argv))  # pylint: disable=protected-access
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else 1
    if not isinstance(e.code, int):
      print(e.code, file=sys.stderr)
  finally:
    predict_lib.FLAGS.unparse_flags()
  out = capsys.readouterr()
  return types.SimpleNamespace(returncode=status, stdout=out.out, stderr=out.err)


def test_signatures_agree_and_return_class_names(exported):
  model, path = exported
  loaded = export_lib.load_export(path)
  images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
  raw = loaded.serving_default(images=tf.constant(images))
  pre = loaded.preprocessed(images=tf.constant(images.astype(np.float32) / 255.0))
  assert set(raw) == set(pre) == {"probabilities", "labels", "class_names"}
  # Equal up to float rounding: grappler may fold serving_default's 1/255 into the first convolution.
  np.testing.assert_allclose(raw["probabilities"].numpy(), pre["probabilities"].numpy(), rtol=1e-6, atol=1e-7)
  for key in ("labels", "class_names"):
    np.testing.assert_array_equal(raw[key].numpy(), pre[key].numpy())
  np.testing.assert_allclose(raw["probabilities"].numpy(),
                             tf.nn.softmax(model(images.astype(np.float32) / 255.0)).numpy(), atol=1e-6)
  assert [n.decode() for n in raw["class_names"].numpy()] == [CLASSES[l] for l in raw["labels"].numpy()]
  with pytest.raises(tf.errors.InvalidArgumentError, match="must have shape"):
    loaded.preprocessed(images=tf.zeros((1, 8, 8, 3)))


def test_load_export_reads_the_metadata_and_falls_back_without_it(exported, tmp_path):
  _, path = exported
  loaded = export_lib.load_export(path)
  assert loaded.metadata == {"class_names": list(CLASSES), "num_classes": 3, "input_shape": [8, 8, 1],
                             "images": True, "split_name": "toy.seed0", "dataset": "toy", "config": "run.steps = 1\n"}
  assert loaded.class_names == CLASSES and loaded.input_shape == (8, 8, 1) and loaded.input_name == "images"
  older = tmp_path / "older"
  shutil.copytree(path, older)
  os.remove(older / export_lib.METADATA_FILE)
  fallback = export_lib.load_export(str(older))
  assert fallback.class_names == ("0", "1", "2") and fallback.input_shape == (8, 8, 1) and fallback.images
  assert fallback.metadata["split_name"] is None and fallback.preprocessed is not None
  with pytest.raises(ValueError, match=f"{tmp_path}: not a SavedModel"):
    export_lib.load_export(str(tmp_path))


def test_predict_reads_folders_of_mixed_sizes_and_reports_a_corrupt_file(exported, inputs, tmp_path, capsys):
  model, path = exported
  root, npz = inputs
  corrupt = tmp_path / "corrupt.png"
  corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
  proc = predict(path, root, corrupt, npz)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert f"{corrupt}:" in proc.stderr and "1 of 7 inputs could not be read" in proc.stderr
  rows = list(csv.DictReader(io.StringIO(proc.stdout)))
  assert [r["input"] for r in rows] == sorted(str(p) for p in root.rglob("*.png")) + [f"{npz}[0]", f"{npz}[1]"]
  for r in rows:
    assert r["class_name"] == CLASSES[int(r["label"])] and 0.0 <= float(r["probability"]) <= 1.0
  # The 13x21 RGB image: gray as the decoder's luma, resized like the folder source, then the model itself.
  wide = tf.io.decode_png(tf.io.read_file(str(root / "a/b/wide.png")))
  gray = tf.cast(tf.clip_by_value(tf.round(tf.image.rgb_to_grayscale(tf.cast(wide, tf.float32))), 0, 255), tf.uint8)
  resized = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(gray, (8, 8), antialias=True), 0, 255)), tf.uint8)
  expected = tf.nn.softmax(model(tf.cast(resized, tf.float32)[None] / 255.0))[0].numpy()
  row = next(r for r in rows if r["input"].endswith("wide.png"))
  assert float(row["probability"]) == pytest.approx(expected.max(), abs=1e-5) and int(row["label"]) == expected.argmax()

  clean = predict_here(capsys, path, root / "a", "--batch_size=2")
  assert clean.returncode == 0, clean.stderr[-2000:]
  assert len(list(csv.DictReader(io.StringIO(clean.stdout)))) == 3 and "could not be read" not in clean.stderr


def test_predict_json_top_k_and_output_file(exported, inputs, tmp_path, capsys):
  _, path = exported
  root, npz = inputs
  out = tmp_path / "predictions.json"
  proc = predict_here(capsys, path, "--format=json", "--top_k=2", f"--output={out}", root / "rgb.png", npz)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout == ""
  records = json.loads(out.read_text())
  assert [r["input"] for r in records] == [str(root / "rgb.png"), f"{npz}[0]", f"{npz}[1]"]
  for r in records:
    assert len(r["top"]) == 2 and r["top"][0]["class_name"] == r["class_name"] in CLASSES
    assert r["top"][0]["probability"] >= r["top"][1]["probability"]
  proc = predict_here(capsys, path, "--top_k=3", npz)
  header = proc.stdout.splitlines()[0]
  assert header == "input,label,class_name,probability,class_name_2,probability_2,class_name_3,probability_3"


def test_predict_exit_status_2_and_one_line_flag_errors(exported, tmp_path, capsys):
  _, path = exported
  (tmp_path / "empty").mkdir()
  proc = predict_here(capsys, path, tmp_path / "empty")
  assert proc.returncode == 2 and "mpl-predict: no inputs found" in proc.stderr
  (tmp_path / "bad.jpg").write_bytes(b"garbage")
  proc = predict_here(capsys, path, tmp_path / "bad.jpg")
  assert proc.returncode == 2 and "none of the 1 inputs could be read" in proc.stderr
  many = tmp_path / "many"
  many.mkdir()
  for i in range(22):
    (many / f"bad{i:02d}.png").write_bytes(b"garbage")
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(many / "good.png")
  proc = predict_here(capsys, path, many)
  lines = proc.stderr.splitlines()
  assert proc.returncode == 1 and len(proc.stdout.splitlines()) == 2
  assert len([l for l in lines if "bad" in l]) == 20 and lines[-2:] == [
      "mpl-predict: ... and 2 more", "mpl-predict: 22 of 23 inputs could not be read"]
  proc = predict_here(capsys, tmp_path, tmp_path / "bad.jpg")
  assert proc.returncode == 1 and f"mpl-predict: {tmp_path}: not a SavedModel" in proc.stderr
  proc = predict(path, "--format=xml", tmp_path / "bad.jpg")
  assert proc.returncode == 1 and len([l for l in proc.stderr.splitlines() if l.startswith("mpl-predict:")]) == 1
