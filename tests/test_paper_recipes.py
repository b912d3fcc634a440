"""The paper's recipes through `python -m mpl_tf.train` on TFDS datasets written to disk (issue 13, item 5).

gin/svhn_1k.gin, gin/cifar10_4k.gin and gin/imagenet_10pct.gin had only been built on `tfds.testing.mock_data`,
whose generator-backed datasets `tf.data` cannot checkpoint, so the trainer (which checkpoints its data iterator)
had never run them. Here each recipe reads a few hundred examples of the real feature specs from TFRecord files
(`tools/generated_tfds.py`: PNG 32x32 SVHN / CIFAR-10, JPEG ImageNet of varied sizes, the real class counts and
split names), shrunk by gin/smoke.gin, with a small network (`cnn_small`) and ImageNet at 32 px for speed. A run
is killed right after its MPL checkpoint at step 4 and resumed: it must finish every phase from there, and the
checkpoint's iterator part must hold positions only (`tools/checkpoint_sizes.py` measures the same).

Resumed and uninterrupted runs are not compared weight for weight: every recipe augments with random ops
(keras-cv RandAugment, Cutout, flips, crops) whose state lies outside the pipeline and draws afresh after a
resume. tests/data/test_tfds_disk.py checks the data position itself, example for example.
"""
import json
import os
import signal
import sys

import pytest
import tensorflow as tf

from tests.conftest import ROOT, train, train_killed_at

sys.path.insert(0, os.path.join(ROOT, "tools"))
import checkpoint_sizes  # pylint: disable=wrong-import-position
import generated_tfds  # pylint: disable=wrong-import-position

# Positions only: counters, file offsets, TFDS's file order and the RNG states of the samplers. Before symbolic
# checkpointing and position-only shuffles the same runs held 2-9 MB here (BENCHMARKS.md, "Checkpoint sizes").
ITERATOR_BYTES = 100_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  generated_tfds.write(path)
  return path


# ImageNet runs in the default suite: its path holds the most that the others lack (JPEGs of varied sizes, the
# random resized crop under op determinism, 1,000 classes, a whole split streamed from disk).
@pytest.mark.parametrize("recipe", [
    "imagenet_10pct",
    pytest.param("cifar10_4k", marks=pytest.mark.slow),
    pytest.param("svhn_1k", marks=pytest.mark.slow),
])
def test_paper_recipe_trains_checkpoints_and_resumes_on_tfds_files(recipe, data_dir, tmp_path):
  gin_files = checkpoint_sizes.recipe_gin_files(recipe)
  bindings = checkpoint_sizes.recipe_bindings(recipe, data_dir) + ("build_dataset.image_size = 32",) * (
      recipe == "imagenet_10pct")
  killed = train_killed_at(4, tmp_path, gin_files, *bindings)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  mpl = str(tmp_path / "checkpoints" / "mpl")
  interrupted = tf.train.latest_checkpoint(mpl)
  assert interrupted.endswith("ckpt-4") and not (tmp_path / "metrics.json").exists()
  sizes = checkpoint_sizes.checkpoint_bytes(interrupted)
  assert 0 < sizes["iterator"] < ITERATOR_BYTES, sizes
  written = os.stat(interrupted + ".index").st_mtime_ns

  resumed = train(tmp_path, gin_files, *bindings)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["step"] == 6 and metrics["method"] == "mpl"
  assert metrics["split"].startswith(recipe) and 0.0 <= metrics["student/accuracy"] <= 1.0
  assert tf.train.latest_checkpoint(mpl).endswith("ckpt-6")
  assert os.stat(interrupted + ".index").st_mtime_ns == written  # resumed at step 4, not trained again from 0
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "finetune")).endswith("ckpt-3")
  assert (tmp_path / "export" / "student" / "saved_model.pb").exists()
