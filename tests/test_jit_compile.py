"""`run.jit_compile`: every phase's steps compiled with XLA when asked, off by default on a CPU (as measured)."""
import gin
import numpy as np
import pytest

from mpl_tf import experiment, runner, trainer
from tests.conftest import ROOT

TWO_MOONS = [f"{ROOT}/gin/two_moons.gin", f"{ROOT}/gin/smoke.gin"]


@pytest.fixture
def phases_seen(monkeypatch):
  """[(phase, model.jit_compile after the phase)] of every phase `experiment.run` trains."""
  seen = []
  real = trainer.train_phase

  def recording(model, dataset, *, phase, **kwargs):
    out = real(model, dataset, phase=phase, **kwargs)
    seen.append((phase, model.jit_compile))
    return out

  monkeypatch.setattr(trainer, "train_phase", recording)
  yield seen
  gin.clear_config()


def _run(workdir, *bindings):
  gin.clear_config()
  # argmax labels: XLA draws sampled pseudo labels with its own kernel, so 'sample' runs differ in their draws.
  experiment.parse_gin(TWO_MOONS, ["run.export = False",
                                   "MetaPseudoLabelsModel.pseudo_labels = 'argmax'", *bindings])
  return experiment.run(str(workdir)).metrics


@pytest.mark.slow  # XLA compiles each phase's step on the CPU: ~45 s
def test_jit_compile_reaches_every_phase_and_trains_the_same_run_to_float_noise(tmp_path, phases_seen):
  compiled = _run(tmp_path / "xla", "run.jit_compile = True")
  assert [p for p, _ in phases_seen] == ["mpl", "finetune"] and all(jit for _, jit in phases_seen)
  del phases_seen[:]
  default = _run(tmp_path / "default")
  assert phases_seen and not any(jit for _, jit in phases_seen)  # CPU: off unless asked
  assert not runner.default_jit_compile()
  for key in ("student/loss", "teacher/loss"):
    assert np.isfinite(compiled[key]) and compiled[key] == pytest.approx(default[key], rel=1e-3, abs=1e-4), key
