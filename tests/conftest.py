"""Shared test set-up: quiet TensorFlow, float64 on request, tiny networks for exact checks, and the training
command line run as a user runs it."""
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from mpl_tf.keras import keras  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, gin_files, bindings=(), flags=()):
  """`python -m mpl_tf.train` with these gin files, bindings and extra flags, as an argument list."""
  cmd = [sys.executable, "-m", "mpl_tf.train", f"--workdir={workdir}", *flags]
  cmd += [f"--gin_file={f}" for f in gin_files] + [f"--gin_bindings={b}" for b in bindings]
  return cmd


# Environment for runs whose stderr a test reads for TensorFlow's C++ warnings: level 1 shows W lines (the tests'
# own default, 2 above, and the command line's, hide them), e.g. the data iterator's checkpoint failure
# "W0000 ... dataset.h:598] FAILED_PRECONDITION: RngReadAndSkip is stateful." of stateful augmentation.
TF_WARNINGS_SHOWN = {"TF_CPP_MIN_LOG_LEVEL": "1"}


def _environment(env):
  return None if env is None else dict(os.environ, **env)


def train(workdir, gin_files, *bindings, flags=(), timeout=600, env=None):
  """Runs the training command line from the project root (`env`: variables set on top of this process's);
  returns the finished process (never raises on failure)."""
  return subprocess.run(command(workdir, gin_files, bindings, flags), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, check=False, env=_environment(env))


# `python -m mpl_tf.train` that SIGKILLs itself right after phase PHASE's checkpoint at step KILL_AT is on disk:
# the kill lands at a known point whatever the machine's load (polling for files from outside races the writer).
_KILLED_TRAIN = """
import os, signal, sys
import tensorflow as tf
save = tf.train.CheckpointManager.save
def save_then_die(self, *args, **kwargs):
  path = save(self, *args, **kwargs)
  if kwargs.get("checkpoint_number") == {kill_at} and self.directory.endswith({phase!r}):
    os.kill(os.getpid(), signal.SIGKILL)
  return path
tf.train.CheckpointManager.save = save_then_die
from absl import app
from mpl_tf import train
app.run(train.main)
"""


def train_killed_at(kill_at, workdir, gin_files, *bindings, phase="mpl", timeout=600, env=None):
  """`train`, killed (SIGKILL) right after `phase` saved its checkpoint at step `kill_at`; the finished process."""
  program = _KILLED_TRAIN.format(kill_at=int(kill_at), phase=os.sep + phase)
  return subprocess.run([sys.executable, "-c", program] + command(workdir, gin_files, bindings)[3:], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False, env=_environment(env))


# `python -m mpl_tf.train` that sends itself signals right after given calls of a phase's train function (counted
# over the whole process, `trainer._to_float` sees each call's logs): the signal lands between two known steps
# whatever the machine's load.
_SIGNALLED_TRAIN = """
import os
from mpl_tf import trainer
to_float, calls = trainer._to_float, [0]
def counted(logs):
  calls[0] += 1
  if calls[0] in {plan!r}:
    os.kill(os.getpid(), {plan!r}[calls[0]])
  return to_float(logs)
trainer._to_float = counted
from absl import app
from mpl_tf import train
app.run(train.main)
"""


def train_signalled_at(plan, workdir, gin_files, *bindings, timeout=600, env=None):
  """`train` that sends itself signal `plan[n]` right after the n-th call of a train function; the finished
  process."""
  program = _SIGNALLED_TRAIN.format(plan={int(k): int(v) for k, v in plan.items()})
  return subprocess.run([sys.executable, "-c", program] + command(workdir, gin_files, bindings)[3:], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False, env=_environment(env))


def assert_identical_runs(a, b, tolerance=0.0, ignore=()):
  """Two finished runs are the same run (tools/compare_runs.py): metrics.json and every tensor of every phase's
  last checkpoint (the data iterator's state aside) bit for bit; with `tolerance`, within it; tensors whose names
  start with one of `ignore` left out. Returns the phases compared."""
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import compare_runs  # pylint: disable=import-outside-toplevel
  metrics = compare_runs.metric_differences(*(json.loads((d / "metrics.json").read_text()) for d in (a, b)),
                                            tolerance)
  phases = compare_runs.checkpoint_differences(str(a), str(b), tolerance, ignore)
  differ = {phase: f"{len(names)} of {n} tensors differ, e.g. {names[:3]}" for phase, (n, names) in phases.items()
            if names}
  assert phases and not metrics and not differ, f"{a.name} vs {b.name}: metrics {metrics}; checkpoints {differ}"
  return sorted(phases)


@pytest.fixture(scope="session")
def generated_tfds_dir(tmp_path_factory):
  """svhn_cropped, cifar10 and imagenet2012 written as small TFDS datasets of the real feature specs
  (tools/generated_tfds.py); `build_dataset.data_dir` reads them."""
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import generated_tfds  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("tfds"))
  generated_tfds.write(path)
  return path


# Command-line flags that put a run on a mesh of virtual CPUs (docs/dtensor.md).
MESH_FLAGS = {
    "2x1": ["--gin_file=gin/layouts/data_parallel.gin", "--gin_bindings=mesh_from_config.virtual_devices = 2"],
    "2x2": ["--gin_file=gin/layouts/data_model.gin", "--gin_bindings=mesh_from_config.virtual_devices = 4"]}


def smoke_command(workdir, labels, mesh_flags=()):
  """`python -m mpl_tf.train` of the TwoMoon smoke run (30 MPL steps, every phase) with `labels` pseudo labels;
  `mesh_flags` pick a mesh (`--gin_file=gin/layouts/...`, `--gin_bindings=mesh_from_config...`)."""
  return [sys.executable, "-m", "mpl_tf.train", f"--workdir={workdir}", "--gin_file=gin/two_moons.gin",
          "--gin_file=gin/smoke.gin", "--gin_bindings=run.steps = 30",
          f"--gin_bindings=MetaPseudoLabelsModel.pseudo_labels = '{labels}'", *mesh_flags]


def assert_same_run(single, other):
  """Two finished TwoMoon runs (pathlib work directories) agree to float noise: metrics.json, every logged
  training scalar of MPL (`teacher/loss`, `student/loss`, `mpl/h`) and the exported student's outputs."""
  from mpl_tf import export  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  from mpl_tf import runs as run_lib  # pylint: disable=import-outside-toplevel
  a, b = (json.loads((d / "metrics.json").read_text()) for d in (single, other))
  assert a.keys() == b.keys()
  for key, value in a.items():
    assert b[key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value), key
  curves_a, curves_b = run_lib.scalars(str(single), "mpl"), run_lib.scalars(str(other), "mpl")
  for tag in ("teacher/loss", "student/loss", "mpl/h"):
    assert curves_a[tag].keys() == curves_b[tag].keys()
    np.testing.assert_allclose(list(curves_b[tag].values()), list(curves_a[tag].values()), atol=1e-5, err_msg=tag)
  points = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
  outputs = [export.load_export(str(d / "export" / "student")).predict(points)["probabilities"] for d in (single, other)]
  np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


@pytest.fixture
def float64():
  """Builds models in float64 for gradient checks against finite differences, then restores float32.

  The global dtype policy is reset to follow floatx: a run in this process (`experiment.run`) pins it to
  'float32', which would silently build float32 layers here.
  """
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(None)
  keras.backend.set_floatx("float64")
  yield
  keras.backend.set_floatx("float32")
  keras.mixed_precision.set_global_policy(policy)


def tiny_mlp(seed: int, in_dim: int = 2, hidden: int = 4, classes: int = 3, name: str = "net"):
  """A 2-layer tanh MLP with weights large enough to make every gradient term visible."""
  from mpl_tf.models.mlp import build_mlp  # pylint: disable=import-outside-toplevel
  return build_mlp(classes, (in_dim,), hidden=(hidden,), activation="tanh", init_scale=0.8, seed=seed, name=name)


def tiny_batch(seed: int = 0, n_l: int = 4, n_u: int = 3, in_dim: int = 2, classes: int = 3):
  """A labeled and an unlabeled batch in the current float type."""
  rng = np.random.default_rng(seed)
  dtype = keras.backend.floatx()
  x_l = tf.constant(rng.normal(size=(n_l, in_dim)), dtype)
  y_l = tf.constant(rng.integers(0, classes, size=n_l), tf.int32)
  x_u = tf.constant(rng.normal(size=(n_u, in_dim)), dtype)
  return x_l, y_l, x_u


def checkpoint_options():
  """What the trainer sets on the dataset it checkpoints."""
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  options.experimental_symbolic_checkpoint = True
  return options


def resumes_at_the_same_element(dataset, skip, count, compare):
  """Checkpoints an iterator after `skip` elements, restores it into a fresh one and compares the next `count`
  elements (`compare(a, b)`); returns the checkpoint's bytes."""
  dataset = dataset.with_options(checkpoint_options())
  it = iter(dataset)
  for _ in range(skip):
    next(it)
  folder = tempfile.mkdtemp()
  path = tf.train.Checkpoint(iterator=it).save(os.path.join(folder, "ckpt"))
  expected = [next(it) for _ in range(count)]
  restored = iter(dataset)
  tf.train.Checkpoint(iterator=restored).restore(path)
  for a, b in zip(expected, (next(restored) for _ in range(count))):
    compare(a, b)
  return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
