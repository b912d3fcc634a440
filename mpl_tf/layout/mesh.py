"""Meshes: a `batch` x `model` DTensor mesh from gin on whatever devices exist, and the run's active mesh."""
import os
from typing import Dict, Optional

import tensorflow as tf
from tensorflow.experimental import dtensor

from mpl_tf.keras import keras

BATCH, MODEL = "batch", "model"
UNSHARDED = dtensor.UNSHARDED
Mesh = dtensor.Mesh
Layout = dtensor.Layout

_DEVICE_TYPES = ("CPU", "GPU", "TPU")


# --- meshes --------------------------------------------------------------------------------------------------
def mesh_from_config(batch: int = 1, model: int = 1, device_type: Optional[str] = None, virtual_devices: int = 0,
                     dtensor_on_one_device: bool = False) -> Optional[Mesh]:
  """The run's mesh (gin: `mesh_from_config.*`, `gin/layouts/*.gin`), or None for the plain single-device path.

  Args:
    batch: size of the `batch` (data-parallel) dimension; -1: every device not used by `model`.
    model: size of the `model` dimension (variables sharded as `sharding_plan` says).
    device_type: 'CPU', 'GPU' or 'TPU'; None: the best present (TPU, then GPU, then CPU).
    virtual_devices: split the host CPU into this many logical devices (tests and benchmarks on a CPU
      machine); must be set before TensorFlow runs its first op.
    dtensor_on_one_device: with a 1x1 mesh, run through DTensor anyway (to measure its overhead) instead of
      returning None.

  Multi-host (several DTensor clients): set DTENSOR_JOBS, DTENSOR_CLIENT_ID, DTENSOR_NUM_CLIENTS and
  DTENSOR_JOB_NAME in every host's environment (docs/dtensor.md); the mesh then spans every client's devices.
  """
  if batch * model == 1 and batch > 0 and not dtensor_on_one_device:
    return None
  return create_mesh(batch=batch, model=model, device_type=device_type, virtual_devices=virtual_devices)


_ACCELERATOR_SYSTEM: Dict[str, str] = {}


def initialize(device_type: Optional[str] = None, virtual_devices: int = 0) -> str:
  """Initialises DTensor's accelerator system once per process (multi-client from DTENSOR_* variables).

  Returns the device type. Idempotent. On a single CPU or GPU host without virtual devices, initialisation is
  optional and is skipped when TensorFlow is already running (plain `create_mesh` works there).
  """
  if "type" in _ACCELERATOR_SYSTEM:
    if device_type and device_type.upper() != _ACCELERATOR_SYSTEM["type"]:
      raise ValueError(f"DTensor is already initialised for {_ACCELERATOR_SYSTEM['type']}, not {device_type}")
    if virtual_devices and len(tf.config.list_logical_devices("CPU")) < virtual_devices:
      raise ValueError(f"{virtual_devices} virtual CPU devices asked for, but the process already runs with "
                       f"{len(tf.config.list_logical_devices('CPU'))}")
    return _ACCELERATOR_SYSTEM["type"]
  device_type = (device_type or dtensor.preferred_device_type()).upper()
  if device_type not in _DEVICE_TYPES:
    raise ValueError(f"device_type must be one of {_DEVICE_TYPES}, got {device_type!r}")
  if virtual_devices and device_type != "CPU":
    raise ValueError("virtual_devices splits the host CPU: use it with device_type='CPU'")
  multi_client = bool(os.environ.get("DTENSOR_JOBS"))
  running = tf.executing_eagerly() and _context_initialized()
  if running:
    if multi_client or device_type == "TPU":
      raise RuntimeError(f"DTensor on {device_type} (or with several clients) must be initialised before "
                         "TensorFlow runs its first op: build the mesh first (mpl_tf.experiment.run does)")
    have = len(tf.config.list_logical_devices("CPU"))
    if virtual_devices and have != virtual_devices:
      raise RuntimeError(f"{virtual_devices} virtual CPU devices must be configured before TensorFlow runs its "
                         f"first op; this process already runs with {have}. Create the mesh first, or start a "
                         "fresh process.")
  else:
    dtensor.initialize_accelerator_system(device_type, num_logical_cpu_devices=virtual_devices or None)
  _ACCELERATOR_SYSTEM["type"] = device_type
  return device_type


def _context_initialized() -> bool:
  from tensorflow.python.eager import context  # pylint: disable=import-outside-toplevel
  return bool(context.context()._initialized)  # pylint: disable=protected-access


def create_mesh(batch: int = -1, model: int = 1, device_type: Optional[str] = None,
                virtual_devices: int = 0) -> Mesh:
  """A `batch` x `model` mesh over every device of `device_type` (all clients' devices on several hosts)."""
  device_type = initialize(device_type, virtual_devices)
  n = dtensor.num_global_devices(device_type)
  if model < 1 or batch == 0 or batch < -1:
    raise ValueError(f"mesh sizes must be positive (batch may be -1: the rest), got batch={batch}, model={model}")
  if batch == -1:
    if n % model:
      raise ValueError(f"{n} {device_type} devices cannot be split into model shards of {model}")
    batch = n // model
  if batch * model > n:
    raise ValueError(f"a {batch} x {model} mesh needs {batch * model} {device_type} devices; {n} are present"
                     + ("" if device_type != "CPU" else " (set mesh_from_config.virtual_devices on a CPU)"))
  dims = [(BATCH, batch), (MODEL, model)]
  if dtensor.num_clients() > 1 or device_type == "TPU":
    return dtensor.create_distributed_mesh(dims, device_type=device_type)
  devices = [f"{device_type}:{i}" for i in range(batch * model)]
  return dtensor.create_mesh(dims, devices=devices, device_type=device_type)


def is_chief() -> bool:
  """Whether this process writes a run's own files (metrics, export, config): DTensor client 0, or the only one.

  Every client of a multi-host mesh runs the same program on a shared workdir; checkpoints are written by all
  (DTensor saves collectively), files that are not checkpoints by client 0 only.
  """
  return dtensor.client_id() == 0


def wait_for_clients(mesh: Optional[Mesh], name: str) -> None:
  """Blocks until every DTensor client of `mesh` has reached the barrier `name`; nothing with one client.

  `experiment.run` ends with it, so that no client leaves (and stops answering the others' heartbeats) while
  the chief still writes the run's files. `dtensor.shutdown_accelerator_system` would be the clean end, but
  TF 2.21 refuses it with several clients ("not supported")."""
  if mesh is not None and dtensor.num_clients() > 1:
    dtensor.barrier(mesh, name)


_ACTIVE: Dict[str, Optional[Mesh]] = {"mesh": None}


def activate(mesh: Optional[Mesh]) -> Optional[Mesh]:
  """Makes `mesh` the run's mesh (None: single device) for `active_mesh()`; returns it.

  `mpl_tf.experiment.run` activates the mesh of `mesh_from_config()` once, first thing; its gin edges
  (`network`, `optimizer`) then build on it. Library code takes its mesh from the networks (`mesh_of`).
  """
  _ACTIVE["mesh"] = mesh
  return mesh


def active_mesh() -> Optional[Mesh]:
  """The mesh of the current run (see `activate`), None on a single device."""
  return _ACTIVE["mesh"]


def mesh_of(obj) -> Optional[Mesh]:
  """The mesh that a network's, a method model's or an optimizer's variables live on; None off a mesh."""
  if obj is None:
    return None
  if isinstance(obj, keras.optimizers.Optimizer):
    return getattr(obj, "_mesh", None)
  variables = obj.variables if hasattr(obj, "variables") else obj
  for v in variables:
    if isinstance(v, dtensor.DVariable):
      return v.layout.mesh
  return None


def replicated(mesh: Mesh, rank: int) -> Layout:
  """Rank-`rank` layout whole on every device of `mesh`."""
  return Layout.replicated(mesh, rank)


def batch_sharded(mesh: Mesh, rank: int) -> Layout:
  """Rank-`rank` layout split along `batch` on the first axis, unsharded elsewhere."""
  return Layout.batch_sharded(mesh, BATCH, rank)
