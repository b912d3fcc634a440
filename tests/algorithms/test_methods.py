"""Every method through one harness, and a new method added as one module plus one gin file.

The harness (`test_every_method_trains_checkpoints_resumes_and_exports`): each method `mpl_tf.experiment` finds
trains its declared phases for a few steps on the digits recipe (gin/smoke.gin: checkpoints every 2 steps, every
phase), writes metrics.json and a SavedModel of its student; then its main phase's last checkpoint and every later
phase's checkpoints are deleted, as if the run had died mid-phase, and the same configuration, run again, resumes
the main phase from its previous checkpoint and ends bit for bit the first run (tools/compare_runs.py), export
included. A method added later joins the harness without a line here.

`test_a_method_is_one_module_and_one_gin_file` writes a method module into a directory added to
`mpl_tf.algorithms`'s search path and a gin file that selects it, and trains it through `python`-level
`experiment.run` with no other change: discovery, gin registration of its model class and the run loop.
"""
import json
import shutil
import textwrap

import gin
import pytest
import tensorflow as tf

from mpl_tf import algorithms, experiment
from tests.conftest import ROOT, assert_identical_runs

DIGITS = [f"{ROOT}/gin/digits.gin", f"{ROOT}/gin/smoke.gin"]
METHOD_BINDINGS = {"uda_distill": ["distill.steps = 4"],
                   "reduced_mpl": ["big_teacher/optimizer.warmup_steps = 1"]}


def _run(workdir, method, *extra):
  gin.clear_config()
  experiment.parse_gin(DIGITS, [f"run.method = '{method}'"] + METHOD_BINDINGS.get(method, []) + list(extra))
  try:
    return experiment.run(str(workdir))
  finally:
    gin.clear_config()


def _phases_in_order(workdir):
  """The run's phase folders in the order they trained (each phase's checkpoint state file is written after the
  previous phase's last one)."""
  folders = [p for p in (workdir / "checkpoints").iterdir() if (p / "checkpoint").exists()]
  return [p.name for p in sorted(folders, key=lambda p: (p / "checkpoint").stat().st_mtime_ns)]


def _forget_from(workdir, order, main):
  """Deletes the main phase's last checkpoint, every later phase's checkpoints and the run's results, as if the
  run had died in its main phase; returns the step of the checkpoint it resumes from."""
  folder = workdir / "checkpoints" / main
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(), str(folder), max_to_keep=None)
  *_, kept, last = manager.checkpoints
  for path in folder.glob(last.rsplit("/", 1)[-1] + ".*"):
    path.unlink()
  (folder / "checkpoint").write_text(f'model_checkpoint_path: "{kept.rsplit("/", 1)[-1]}"\n')
  for name in order[order.index(main) + 1:]:
    shutil.rmtree(workdir / "checkpoints" / name)
  shutil.rmtree(workdir / "export")
  (workdir / "metrics.json").unlink()
  return int(kept.rsplit("-", 1)[-1])


# The main phase of every method is named 'mpl' (MPL, Reduced MPL) or 'train' (the baselines).
@pytest.mark.parametrize("method", sorted(experiment.METHODS))
def test_every_method_trains_checkpoints_resumes_and_exports(method, tmp_path):
  first = tmp_path / "first"
  result = _run(first, method)
  order = _phases_in_order(first)
  main = "mpl" if "mpl" in order else "train"
  assert (first / "export" / "student" / "saved_model.pb").exists()
  assert json.loads((first / "metrics.json").read_text())["method"] == method
  assert result.metrics["step"] == 6  # gin/smoke.gin's main phase

  resumed = tmp_path / "resumed"
  shutil.copytree(first, resumed)
  assert _forget_from(resumed, order, main) == 4
  _run(resumed, method)
  assert assert_identical_runs(first, resumed) == sorted(order)
  assert (resumed / "export" / "student" / "saved_model.pb").exists()


def test_a_method_is_one_module_and_one_gin_file(tmp_path, monkeypatch):
  package = tmp_path / "more_methods"
  package.mkdir()
  (package / "copycat.py").write_text(textwrap.dedent('''
      """A made-up method: the supervised baseline under another name, with its own configurable model."""
      from mpl_tf.algorithms.phases import Method, Phase
      from mpl_tf.algorithms.supervised import SupervisedModel, finetune


      class CopycatModel(SupervisedModel):
        """SupervisedModel with one more argument, bound in the method's gin file."""

        def __init__(self, network, marker: float = 0.0, **kwargs):
          super().__init__(network, **kwargs)
          self.marker = marker


      def phases(builder):
        model = builder.make(CopycatModel, builder.network(2))
        model.compile(optimizer=builder.optimizer("student", builder.steps))
        return [Phase("train", lambda _: model, "labeled", builder.steps, scores="all", main=True), *finetune(builder)]


      METHOD = Method("copycat", phases, configurables=((CopycatModel, None),))
      '''))
  gin_file = tmp_path / "copycat.gin"
  gin_file.write_text("include 'gin/digits.gin'\nrun.method = 'copycat'\nCopycatModel.marker = 2.5\n")
  monkeypatch.setattr(algorithms, "__path__", [*algorithms.__path__, str(package)])
  experiment.register_methods()
  gin.clear_config()
  experiment.parse_gin([str(gin_file), f"{ROOT}/gin/smoke.gin"], ["run.export = False"])
  try:
    result = experiment.run(str(tmp_path / "run"))
  finally:
    gin.clear_config()
  assert type(result.model).__name__ == "CopycatModel" and result.model.marker == 2.5
  assert result.metrics["method"] == "copycat" and result.metrics["step"] == 6
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["finetune", "train"]
