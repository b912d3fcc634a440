"""The paper's recipes through `python -m mpl_tf.train` on TFDS datasets written to disk (issue 13, item 5).

gin/svhn_1k.gin, gin/cifar10_4k.gin and gin/imagenet_10pct.gin had only been built on `tfds.testing.mock_data`,
whose generator-backed datasets `tf.data` cannot checkpoint, so the trainer (which checkpoints its data iterator)
had never run them. Here each recipe reads a few hundred examples of the real feature specs from TFRecord files
(`tools/generated_tfds.py`: PNG 32x32 SVHN / CIFAR-10, JPEG ImageNet of varied sizes, the real class counts and
split names), shrunk by gin/smoke.gin, with a small network (`cnn_small`) and ImageNet at 32 px for speed. A run
is killed right after its MPL checkpoint at step 4 and resumed: it must finish every phase from there, the
checkpoint's iterator part must hold positions only (`tools/checkpoint_sizes.py` measures the same), and it must
end as the uninterrupted run of the same command, bit for bit (metrics.json and every checkpoint tensor: the
augmentation is stateless since issue 25; before, it drew afresh after a resume and the runs were not compared).
tests/data/test_tfds_disk.py checks the data position itself, example for example.

All three are slow: tests/test_reproducible_runs.py runs ImageNet's kill and resume (with these assertions) and
its same-seed repeat in the default suite, on the same generated files.
"""
import json
import os
import signal
import sys

import pytest
import tensorflow as tf

from tests.conftest import ROOT, assert_identical_runs, train, train_killed_at

sys.path.insert(0, os.path.join(ROOT, "tools"))
import checkpoint_sizes  # pylint: disable=wrong-import-position

# Positions only: counters, file offsets, TFDS's file order and the RNG states of the samplers: a few kB
# (BENCHMARKS.md, "Checkpoint sizes"); a shuffle buffer or a saved prefetch would hold megabytes here.
ITERATOR_BYTES = 100_000


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["imagenet_10pct", "cifar10_4k", "svhn_1k"])
def test_paper_recipe_trains_checkpoints_and_resumes_on_tfds_files(recipe, generated_tfds_dir, tmp_path):
  data_dir = generated_tfds_dir
  gin_files = checkpoint_sizes.recipe_gin_files(recipe)
  bindings = checkpoint_sizes.recipe_bindings(recipe, data_dir) + ("build_dataset.image_size = 32",) * (
      recipe == "imagenet_10pct")
  workdir = tmp_path / "killed"
  killed = train_killed_at(4, workdir, gin_files, *bindings)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  mpl = str(workdir / "checkpoints" / "mpl")
  interrupted = tf.train.latest_checkpoint(mpl)
  assert interrupted.endswith("ckpt-4") and not (workdir / "metrics.json").exists()
  sizes = checkpoint_sizes.checkpoint_bytes(interrupted)
  assert 0 < sizes["iterator"] < ITERATOR_BYTES, sizes
  written = os.stat(interrupted + ".index").st_mtime_ns

  resumed = train(workdir, gin_files, *bindings)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["step"] == 6 and metrics["method"] == "mpl"
  assert metrics["split"].startswith(recipe) and 0.0 <= metrics["student/accuracy"] <= 1.0
  assert tf.train.latest_checkpoint(mpl).endswith("ckpt-6")
  assert os.stat(interrupted + ".index").st_mtime_ns == written  # resumed at step 4, not trained again from 0
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints" / "finetune")).endswith("ckpt-3")
  assert (workdir / "export" / "student" / "saved_model.pb").exists()
  uninterrupted = train(tmp_path / "uninterrupted", gin_files, *bindings)
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
  assert_identical_runs(tmp_path / "uninterrupted", workdir)
