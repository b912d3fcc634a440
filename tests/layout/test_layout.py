"""mpl_tf.layout: MPL on DTensor meshes of virtual CPU devices gives the single-device run, layouts as planned.

The mesh checks need virtual CPU devices configured before TensorFlow starts, so they run in one fresh process
(`tests/layout/dtensor_checks.py`, about 100 s of CPU) and each is reported here as its own test. The command-line test
trains the TwoMoon smoke run on a 2 x 2 mesh picked by gin.
"""
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import layout
from mpl_tf.keras import keras
from mpl_tf.models import builder
from tests.conftest import MESH_FLAGS, assert_same_run, smoke_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "layout"))
import dtensor_checks  # pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def mesh_checks():
  """Runs every check of tests/layout/dtensor_checks.py in one process with 4 virtual CPU devices.

  One intra-op thread: the four virtual devices' thread pools share the machine's cores, and beside another busy
  process they slowed each other down badly (on 2 cores with one core busy: 13.4 min with TensorFlow's default
  pools, 5.3 min with one thread each; 1.5 min either way on an idle machine). The checks compare a mesh run
  with a single-device run in the same process, so the thread count changes what both compute alike."""
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="2")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "layout", "dtensor_checks.py"), "--devices", "4"],
                        cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert proc.returncode == 0 and lines, f"dtensor_checks.py failed:\n{proc.stderr[-5000:]}"
  return json.loads(lines[-1])


@pytest.mark.parametrize("name", list(dtensor_checks.CHECKS))
def test_on_virtual_cpu_meshes(mesh_checks, name):
  """See each check's code in tests/layout/dtensor_checks.py (mesh run == single-device run, layouts, round trips)."""
  assert mesh_checks[name] == "ok", f"{name}:\n{mesh_checks[name]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(dtensor_checks.SLOW))
def test_big_families_on_virtual_cpu_meshes(name):
  """WRN-28-2 MPL, ResNet-50 and EfficientNet-B0 supervised steps on a 2x2 mesh == one device (minutes each)."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "layout", "dtensor_checks.py"), name], cwd=ROOT,
                        capture_output=True, text=True, timeout=3600, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert proc.returncode == 0 and lines, proc.stderr[-5000:]
  result = json.loads(lines[-1])[name]
  assert result == "ok", result


def test_without_onednn_grouped_convolutions_are_refused_on_a_cpu_mesh():
  """The check above in a process with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), where TensorFlow's CPU kernels have
  no gradient for grouped convolutions: place_network refuses the network with a message naming the problem."""
  name = "grouped_convolutions_train_on_a_cpu_mesh_only_with_onednn"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "layout", "dtensor_checks.py"), name], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, check=False,
                        env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0"))
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert proc.returncode == 0 and lines, proc.stderr[-5000:]
  assert json.loads(lines[-1])[name] == "ok", json.loads(lines[-1])[name]


# --- in this process: no mesh, plans, gin ----------------------------------------------------------------------
def test_no_mesh_is_the_default_and_leaves_the_single_device_path_as_it_was():
  assert layout.mesh_from_config() is None
  assert layout.mesh_from_config(batch=1, model=1) is None
  net = builder.build_model("mlp", 2, (2,), seed=0)
  assert layout.place_network(net, None) is net and layout.mesh_of(net) is None
  dataset = tf.data.Dataset.range(3)
  assert isinstance(layout.iterator(dataset, None), type(iter(dataset)))
  opt = layout.make_optimizer(keras.optimizers.SGD, None, learning_rate=0.1)
  assert type(opt) is keras.optimizers.SGD and getattr(opt, "_mesh", None) is None
  x = tf.range(10)
  parts = layout.split(x, [tf.zeros([4]), tf.zeros([6])], None)
  assert [p.numpy().tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]
  logits = tf.random.stateless_normal([6, 3], seed=[1, 2])
  seed = tf.constant([3, 4], tf.int64)
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  np.testing.assert_array_equal(layout.pseudo_labels(logits, "sample", seed, None),
                                losses.pseudo_labels(logits, "sample", seed))


@pytest.mark.parametrize("bn_fused", [False, None])
def test_the_ema_clone_keeps_the_networks_batch_norm_kind(bn_fused):
  """Off a mesh the EMA student (which finetuning and distillation go on training) is a clone: with bn_fused=False
  it was fused again (`fused` is not in the layer's config), so its moving variance followed the unbiased batch
  variance, 1e-3 away from a mesh run's (always unfused) after the digits smoke run's finetuning."""
  net = builder.build_model("cnn_small", 10, (8, 8, 1), seed=0, bn_fused=bn_fused)
  clone = layout.clone_network(net)
  kinds = [[l.fused for l in n.layers if isinstance(l, keras.layers.BatchNormalization)] for n in (net, clone)]
  assert kinds[0] == kinds[1] == [bn_fused is None] * 3
  x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(clone(x, training=False), net(x, training=False))


@pytest.mark.parametrize("shards", [2, 4])
def test_wrn_plan_gathers_every_conv_kernel_and_replicates_batch_norm(shards):
  net = builder.build_model("wrn28_2", 10, (32, 32, 3))
  plan = layout.sharding_plan(net, shards)
  by_key = {p.key: p for p in plan}
  convs = [l.name for l in net.layers if isinstance(l, keras.layers.Conv2D)]
  assert len(convs) == 27  # stem, 2 in each of the 12 blocks, 2 projection shortcuts
  assert all(by_key[f"{c}.kernel"].how == "gathered" and by_key[f"{c}.kernel"].specs[-1] == "model" for c in convs)
  assert all(not p.sharded for p in plan if "_bn." in p.key)
  logits = by_key["logits.kernel"]
  assert logits.sharded == (10 % shards == 0)  # 10 classes split in 2, not in 4
  sharded = sum(np.prod(p.shape) for p in plan if p.sharded)
  assert sharded / sum(np.prod(p.shape) for p in plan) > 0.99  # conv kernels are almost all of WRN-28-2


def test_only_dtensor_client_zero_writes_the_run_files(monkeypatch):
  assert layout.is_chief()  # one process, no DTENSOR_* variables
  monkeypatch.setenv("DTENSOR_JOBS", "host0:9991,host1:9991")
  monkeypatch.setenv("DTENSOR_CLIENT_ID", "1")
  assert not layout.is_chief()
  monkeypatch.setenv("DTENSOR_CLIENT_ID", "0")
  assert layout.is_chief()


def test_a_method_that_cannot_run_on_a_mesh_is_refused_by_name(monkeypatch, tmp_path):
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  assert {name for name, m in experiment.METHODS.items() if not m.supports_mesh} == {"reduced_mpl"}
  monkeypatch.setattr(experiment, "mesh_from_config", object)  # any mesh; refused before anything is built
  with pytest.raises(NotImplementedError, match="reduced_mpl.*single_device.gin"):
    experiment.run(str(tmp_path), method="reduced_mpl", steps=1)
  assert not os.listdir(tmp_path)


def test_every_family_has_a_note_on_what_is_sharded():
  assert set(layout.FAMILY_NOTES) == set(builder.FAMILIES)


def test_layout_gin_files_pick_the_mesh():
  expected = {"single_device": (1, 1), "data_parallel": (-1, 1), "data_model": (-1, 2)}
  try:
    for name, (batch, model) in expected.items():
      gin.clear_config()
      gin.parse_config_file(os.path.join(ROOT, "gin", "layouts", f"{name}.gin"))
      assert gin.query_parameter("mesh_from_config.batch") == batch
      assert gin.query_parameter("mesh_from_config.model") == model
  finally:
    gin.clear_config()


def _cli_run(workdir, labels, mesh=None):
  """The TwoMoon smoke run (30 MPL steps, every phase) through `python -m mpl_tf.train`, on one device or a mesh."""
  proc = subprocess.run(smoke_command(workdir, labels, MESH_FLAGS.get(mesh, [])), cwd=ROOT, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def test_the_command_line_trains_the_same_run_on_a_2x2_mesh_as_on_one_device(tmp_path):
  """The CLI's whole path (data pipeline and per-device readers, seeding, placement, evaluation, export) on 4
  virtual CPUs: the same metrics, training curves and exported student as one device (argmax labels: sampled ones
  are drawn by another sampler on a mesh, `layout.sample_categorical`)."""
  single = _cli_run(tmp_path / "single", "argmax")
  meshed = _cli_run(tmp_path / "mesh", "argmax", "2x2")
  assert (meshed / "checkpoints" / "mpl" / "ckpt-30-data_position.index").exists()
  assert_same_run(single, meshed)


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["argmax", "soft"])
@pytest.mark.parametrize("mesh", list(MESH_FLAGS))
def test_the_command_line_on_every_mesh_and_label_mode_equals_one_device(tmp_path, labels, mesh):
  assert_same_run(_cli_run(tmp_path / "single", labels), _cli_run(tmp_path / "mesh", labels, mesh))
