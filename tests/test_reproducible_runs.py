"""Same seed, same run (issue 25, item 2): through `python -m mpl_tf.train`, as a user runs it.

Three recipes, each shortened by gin/smoke.gin (6 MPL steps checkpointed every 2, every phase):
  digits          gin/digits.gin: weak + strong views, sampled pseudo labels, dropout, UDA, EMA, finetuning;
  own_data        gin/own_data.gin on an 8x8 .npz stand-in (tools/standins.py): the own-data augmentation,
                  soft labels on the weak view, the distill phase (4 steps here);
  imagenet_10pct  gin/imagenet_10pct.gin on generated TFDS files (tools/generated_tfds.py; 32 px, `cnn_small`, as
                  tests/test_paper_recipes.py): JPEGs of varied sizes, the random resized crop, a whole split streamed.
Each is trained once uninterrupted; then
- a second run of the same command must be that run bit for bit: metrics.json and every tensor of every phase's
  last checkpoint (tools/compare_runs.py; skipped: the data iterator's state and the object graph, no values);
- a run SIGKILLed right after its MPL checkpoint at step 4 (tests/conftest.py `train_killed_at`: in-process, at a
  known point, not racy) and run again must end as the uninterrupted run, bit for bit. Step 4 is inside the phase,
  so the resumed run restores the data iterator mid-stream (its checkpoint must hold positions only, < 100 kB)
  and the sampler's, dropout's and the augmentation's draws must continue where they stopped. The run must resume
  from that checkpoint, not retrain it, and no stderr may hold the old iterator-checkpoint failure ("RngReadAndSkip
  is stateful", a C++ warning, shown because these runs set TF_CPP_MIN_LOG_LEVEL=1).
Before stateless augmentation (commit 59417a4) both failed: two digits runs of one seed differed, and a killed
run printed "... is stateful" at every checkpoint and drew fresh views after its resume. After it the resumed
runs still differed on every recipe (all three use dropout): dropout drew from TensorFlow's legacy stateful ops,
whose state no checkpoint holds; now from seeded generators saved with the checkpoint (`trainer.random_generators`,
tested in this process at the end of this file).

And the augmented digits recipe on a 2x1 and a 2x2 virtual CPU mesh trains the single-device run (below).

Cost: the default suite trains digits once uninterrupted and once through SIGINT and SIGTERM (three processes),
and own_data and imagenet_10pct twice each (uninterrupted; killed and resumed), plus the mesh check. The same-seed
repeats and digits' SIGKILL leg are slow (`make test-slow`): in the default suite a run-to-run difference or a
broken resume already fails the other legs and tests/algorithms/test_methods.py. The ImageNet kill-and-resume
replaces the one tests/test_paper_recipes.py ran in the default suite (now slow, with the same bitwise check).
"""
import json
import os
import signal
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (MESH_FLAGS, ROOT, TF_WARNINGS_SHOWN, assert_identical_runs, train, train_killed_at,
                            train_signalled_at)

sys.path.insert(0, os.path.join(ROOT, "tools"))
import checkpoint_sizes  # pylint: disable=wrong-import-position
import standins  # pylint: disable=wrong-import-position
from tests.test_paper_recipes import ITERATOR_BYTES  # pylint: disable=wrong-import-position

SMOKE = "gin/smoke.gin"
KILL_AT = 4  # of smoke.gin's 6 MPL steps, checkpointed every 2
PHASES = {"digits": ["finetune", "mpl"], "own_data": ["distill", "finetune", "mpl"],
          "imagenet_10pct": ["finetune", "mpl"]}
STATEFUL = "is stateful"


class Recipes:
  """Each recipe's command (gin files, bindings) and its uninterrupted run, trained once for the module."""

  def __init__(self, root, tfds_dir):
    self.root, self.tfds_dir = root, tfds_dir
    self._first = {}

  def command(self, recipe):
    if recipe == "digits":
      return ("gin/digits.gin", SMOKE), ()
    if recipe == "own_data":
      npz = self.root / "digits_npz.npz"
      if not npz.exists():
        standins.build("digits_npz", str(self.root), seed=0)
      return ("gin/own_data.gin", SMOKE), (f"build_dataset.path = '{npz}'", "distill.steps = 4")
    return (checkpoint_sizes.recipe_gin_files(recipe),
            checkpoint_sizes.recipe_bindings(recipe, self.tfds_dir) + ("build_dataset.image_size = 32",))

  def train(self, recipe, name):
    """A finished run of `recipe` in a fresh work directory `name`; asserts it succeeded cleanly."""
    gin_files, bindings = self.command(recipe)
    workdir = self.root / f"{recipe}.{name}"
    proc = train(workdir, gin_files, *bindings, env=TF_WARNINGS_SHOWN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert STATEFUL not in proc.stderr, [l for l in proc.stderr.splitlines() if STATEFUL in l][:3]
    return workdir

  def uninterrupted(self, recipe):
    if recipe not in self._first:
      self._first[recipe] = self.train(recipe, "uninterrupted")
    return self._first[recipe]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory, generated_tfds_dir):
  return Recipes(tmp_path_factory.mktemp("recipes"), generated_tfds_dir)


# The resume test of a recipe catches any run-to-run difference too (its killed leg trains from scratch): this
# test tells the two apart. Slow for every recipe: in the default suite a run-to-run difference already fails the
# kill-and-resume tests below, the SIGINT / SIGTERM test and every method's resume in
# tests/algorithms/test_methods.py (`make digits` twice is the check).
@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) for r in PHASES])
def test_the_same_seed_trains_the_same_run_twice(recipes, recipe):
  first = recipes.uninterrupted(recipe)
  assert assert_identical_runs(first, recipes.train(recipe, "again")) == PHASES[recipe]


# Digits' SIGKILL leg is slow: the default suite kills and resumes own data (augmented views and dropout as digits,
# with soft labels and the distill phase) and ImageNet here, and digits with SIGINT / SIGTERM below.
@pytest.mark.parametrize("recipe", [pytest.param("digits", marks=pytest.mark.slow), "own_data", "imagenet_10pct"])
def test_a_run_killed_right_after_a_checkpoint_resumes_to_the_uninterrupted_run(recipes, recipe, tmp_path):
  first = recipes.uninterrupted(recipe)
  gin_files, bindings = recipes.command(recipe)
  workdir = tmp_path / "killed"
  killed = train_killed_at(KILL_AT, workdir, gin_files, *bindings, env=TF_WARNINGS_SHOWN)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  interrupted = tf.train.latest_checkpoint(str(workdir / "checkpoints" / "mpl"))
  assert interrupted.endswith(f"ckpt-{KILL_AT}") and not (workdir / "metrics.json").exists()
  sizes = checkpoint_sizes.checkpoint_bytes(interrupted)
  assert 0 < sizes["iterator"] < ITERATOR_BYTES, sizes
  written = os.stat(interrupted + ".index").st_mtime_ns

  resumed = train(workdir, gin_files, *bindings, env=TF_WARNINGS_SHOWN)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert os.stat(interrupted + ".index").st_mtime_ns == written  # resumed at step 4, not trained again from 0
  for proc in (killed, resumed):
    assert STATEFUL not in proc.stderr, [l for l in proc.stderr.splitlines() if STATEFUL in l][:3]
  assert json.loads((workdir / "metrics.json").read_text())["step"] == 6
  assert assert_identical_runs(first, workdir) == PHASES[recipe]


def test_sigint_and_sigterm_save_the_phase_at_the_next_step_and_the_same_command_resumes_to_the_uninterrupted_run(
    recipes, tmp_path):
  """Issue 27, item 2: Ctrl-C used to print a KeyboardInterrupt traceback and lose every step since the last
  periodic checkpoint; SIGTERM (a preempted machine) killed the run outright. Now each saves the current phase at
  the next step boundary and exits in one line (status 130 / 143). Checkpoints every 100 steps (a binding that may
  change between the runs of a directory) leave the signal's checkpoint the only one inside each phase: SIGINT
  after MPL's step 4, then, in the resumed process, SIGTERM after finetuning's step 2 (`train_signalled_at` counts
  the train-function calls of each process). The third start of the same command finishes the run, bit for bit
  the uninterrupted one."""
  gin_files, bindings = recipes.command("digits")
  bindings += ("run.checkpoint_every = 100",)
  workdir = tmp_path / "signalled"
  stopped = {}
  for name, plan, phase, step, steps, status in (("SIGINT", {2: signal.SIGINT}, "mpl", 4, 6, 130),
                                                 ("SIGTERM", {2: signal.SIGTERM}, "finetune", 2, 3, 143)):
    proc = train_signalled_at(plan, workdir, gin_files, *bindings)
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"mpl_tf.train: stopped by {name} at step {step} of {steps} "
        f"of phase '{phase}'; checkpoint kept; rerun the same command to resume")
    saved = tf.train.latest_checkpoint(str(workdir / "checkpoints" / phase))
    assert saved.endswith(f"ckpt-{step}") and not (workdir / "metrics.json").exists()
    stopped[phase] = (saved, os.stat(saved + ".index").st_mtime_ns)
  finished = train(workdir, gin_files, *bindings)
  assert finished.returncode == 0, finished.stderr[-3000:]
  for saved, written in stopped.values():  # resumed from the signal's checkpoints, not retrained
    assert os.stat(saved + ".index").st_mtime_ns == written
  assert not (workdir / "run.lock").read_text()  # released by every process, even the stopped ones
  # Every tensor but the checkpoint manager's count of saves (2 here: 4 and 6; 3 uninterrupted: 2, 4 and 6).
  assert assert_identical_runs(recipes.uninterrupted("digits"), workdir,
                               ignore=("save_counter/",)) == PHASES["digits"]


# --- the augmented digits recipe on a mesh -----------------------------------------------------------------------
# What a mesh computes differently from one device by design, set alike on both sides: dropout draws from
# tf.random.Generator on a mesh (layout.place_network), sampled pseudo labels from another sampler
# (layout.sample_categorical), and placed networks use unfused batch norm, whose moving variance follows the
# biased batch variance where fused batch norm's follows the unbiased one (n / (n - 1) times it).
MESH_BINDINGS = ("network.dropout = 0.0", "MetaPseudoLabelsModel.pseudo_labels = 'argmax'",
                 "network.bn_fused = False")
MESH_TOLERANCE = 5e-5


@pytest.fixture(scope="module")
def single_device_digits(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("mesh") / "single"
  proc = train(workdir, ["gin/digits.gin", SMOKE], *MESH_BINDINGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.parametrize("mesh", ["2x1", pytest.param("2x2", marks=pytest.mark.slow)])
def test_the_augmented_digits_recipe_on_a_mesh_trains_the_single_device_run(single_device_digits, mesh, tmp_path):
  """The CLI on a 2x1 (data parallel) or 2x2 (data x model) mesh of virtual CPUs: every device's reader makes the
  same weak and strong views of the same examples, so the run is the single-device one, every phase, within
  float32 rounding.

  Within MESH_TOLERANCE (5e-5) of each checkpoint tensor's largest magnitude, and of max(1, |value|) for each
  metric (tools/compare_runs.py --tolerance). float32, not float64 as tests/layout/mesh_runs.py compares deep networks:
  the command line pins the float32 policy (run.mixed_precision = 'float64' fails in evaluation, whose top-k needs
  float32 logits), and this small CNN does not amplify rounding chaotically. Measured here: the largest difference
  is 2.7e-6 of its tensor (the MPL baseline on 2x2; weights 1.1e-6), the accuracies are equal and the losses agree
  to 3e-7. The tolerance is 18 times that; the fused-vs-unfused batch-norm difference (moving variances 1e-3 apart)
  falls 20 times outside it, and the recipe's own dropout and sampled labels move the losses by 3e-3 and the
  accuracies by points.

  2x1: 29 s, with its single-device run 54 s (2-core machine, load 1; 81 s beside two busy loops); 2x2 (slow):
  63 s more.
  """
  workdir = tmp_path / mesh
  proc = train(workdir, ["gin/digits.gin", SMOKE], *MESH_BINDINGS, flags=MESH_FLAGS[mesh], env=TF_WARNINGS_SHOWN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert STATEFUL not in proc.stderr
  assert (workdir / "checkpoints" / "mpl" / "ckpt-6-data_position.index").exists()  # trained on a mesh
  # Dropout is off; its generators' states are saved off a mesh only (trainer.random_generators).
  assert assert_identical_runs(single_device_digits, workdir, tolerance=MESH_TOLERANCE,
                               ignore=("random_generators/",)) == PHASES["digits"]


# --- in this process: the trainer's part ---------------------------------------------------------------------------
def _dropout_phase(workdir, steps, restorable):
  """`steps` of a supervised phase (dropout 0.5) through `trainer.train_phase`, resuming from `workdir`'s
  checkpoint if any; the network's weights after it."""
  from mpl_tf import trainer  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms import recompute  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.supervised import SupervisedModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  network = builder.build_model("cnn_small", 3, (8, 8, 1), seed=0, dropout=0.5)
  if restorable:
    recompute.use_restorable_generators(network, seed=0)  # as experiment.network does
  model = SupervisedModel(network)
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  rng = np.random.default_rng(0)
  data = tf.data.Dataset.from_tensor_slices((rng.uniform(size=(32, 8, 8, 1)).astype(np.float32),
                                             rng.integers(0, 3, 32).astype(np.int32))).batch(8).repeat()
  trainer.train_phase(model, data, workdir=str(workdir), phase="p", steps=steps, checkpoint_every=2,
                      summary_every=0, verbose=0)
  return network.get_weights()


@pytest.mark.parametrize("restorable", [True, False])
def test_a_resumed_phase_draws_the_dropout_masks_the_uninterrupted_phase_drew(tmp_path, restorable):
  """The trainer checkpoints the generators that dropout draws from (`trainer.random_generators`), so a phase
  resumed at step 2 ends as the straight one. Control: on TensorFlow's legacy stateful ops (tf-keras' default,
  and the networks' before issue 25), whose state no checkpoint holds, the resumed phase draws step 1's masks
  again and ends elsewhere."""
  straight = _dropout_phase(tmp_path / "straight", 4, restorable)
  _dropout_phase(tmp_path / "resumed", 2, restorable)
  resumed = _dropout_phase(tmp_path / "resumed", 4, restorable)
  assert all(np.array_equal(a, b) for a, b in zip(straight, resumed)) == restorable
