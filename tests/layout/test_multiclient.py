"""A multi-client DTensor mesh on one machine: two processes (DTensor clients on loopback ports, CPU devices)
train the TwoMoon smoke run as one mesh, and it is the single-device run.

`tools/local_clients.py` starts both clients of `python -m mpl_tf.train` with free ports and the DTENSOR_*
variables, kills every client's process group when one fails or the time bound passes, and returns their output.
Both clients share the work directory: client 0 writes metrics.json, summaries, the export and the data position;
both write the model checkpoint (DTensor saves collectively). Compared with the single-device run as the
virtual-device mesh test compares (`tests.conftest.assert_same_run`, 1e-5), plus the final MPL checkpoint,
variable by variable: a collective save that lost a client's part would differ there.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, assert_same_run, smoke_command

sys.path.insert(0, os.path.join(ROOT, "tools"))
import local_clients  # pylint: disable=wrong-import-position

# Per client: `virtual_devices` is the number of logical CPUs of each client, so the mesh has clients x that.
LAYOUTS = {
    # 1 x 2 over 2 clients x 1 CPU: the `model` dimension spans the processes (sharded variables, their
    # all-gathers and the checkpoint's shards cross the loopback link).
    "1x2": ["--gin_file=gin/layouts/data_model.gin", "--gin_bindings=mesh_from_config.virtual_devices = 1"],
    # 2 x 2 over 2 clients x 2 CPUs: each client holds one `batch` shard with both `model` shards; the gradient
    # sums cross the processes.
    "2x2": ["--gin_file=gin/layouts/data_model.gin", "--gin_bindings=mesh_from_config.virtual_devices = 2"],
}
TIMEOUT_S = 900


def _single_device_run(workdir):
  proc = subprocess.run(smoke_command(workdir, "argmax"), cwd=ROOT, capture_output=True, text=True,
                        timeout=TIMEOUT_S, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def _two_client_run(workdir, mesh):
  results = local_clients.launch(smoke_command(workdir, "argmax", LAYOUTS[mesh]), clients=2, timeout=TIMEOUT_S,
                                 cwd=ROOT, log_dir=str(workdir) + "_logs")
  assert not local_clients.failed(results), local_clients.report(results)
  return workdir


def _assert_same_checkpoint(single, other, phase="mpl", step=30):
  """Every variable of the phase's final checkpoint agrees (the iterator's state: in the data-position file)."""
  a = tf.train.load_checkpoint(str(single / "checkpoints" / phase / f"ckpt-{step}"))
  b = tf.train.load_checkpoint(str(other / "checkpoints" / phase / f"ckpt-{step}"))
  keys = set(b.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
  assert keys == set(a.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH",
                                                          "iterator/.ATTRIBUTES/ITERATOR_STATE"}
  for key in sorted(keys):
    np.testing.assert_allclose(b.get_tensor(key), a.get_tensor(key), rtol=1e-5, atol=2e-6, err_msg=key)
  assert (other / "checkpoints" / phase / f"ckpt-{step}-data_position.index").exists()


def _check(tmp_path, mesh):
  single = _single_device_run(tmp_path / "single")
  shared = _two_client_run(tmp_path / "two_clients", mesh)
  assert_same_run(single, shared)
  _assert_same_checkpoint(single, shared)
  assert len(os.listdir(shared / "summaries" / "mpl")) == 1  # the chief's curves only


@pytest.mark.slow
def test_two_processes_train_the_single_device_run_on_a_1x2_mesh(tmp_path):
  """`model` split across the two processes: the same metrics, curves, export and checkpoint as one device."""
  _check(tmp_path, "1x2")


@pytest.mark.slow
def test_two_processes_train_the_single_device_run_on_a_2x2_mesh(tmp_path):
  """`batch` split across the processes, `model` inside each: the same run as one device."""
  _check(tmp_path, "2x2")


def test_a_failing_client_brings_every_client_down(tmp_path):
  """The launcher's promise the tests rely on: one client's error ends the others (killed, not left blocked)."""
  script = ("import os, sys, time\n"
            "if os.environ['DTENSOR_CLIENT_ID'] == '1': sys.exit(3)\n"
            "time.sleep(600)\n")
  results = local_clients.launch([sys.executable, "-c", script], clients=2, timeout=600,
                                 log_dir=str(tmp_path / "logs"))
  assert [(r.returncode, r.killed, r.why) for r in results] == [(None, True, local_clients.ANOTHER_FAILED),
                                                                (3, False, "")]
  assert local_clients.failed(results)


def test_each_client_gets_its_id_and_the_same_distinct_loopback_ports():
  envs = local_clients.client_environments(2, base={})
  assert [e["DTENSOR_CLIENT_ID"] for e in envs] == ["0", "1"]
  assert {e["DTENSOR_JOBS"] for e in envs} == {envs[0]["DTENSOR_JOBS"]}
  hosts = envs[0]["DTENSOR_JOBS"].split(",")
  assert len(set(hosts)) == 2 and all(h.startswith("localhost:") for h in hosts)
  assert all(e["DTENSOR_NUM_CLIENTS"] == "2" for e in envs)
