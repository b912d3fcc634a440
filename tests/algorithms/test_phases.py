"""A run is the method's declared phases, trained in order by one loop (`mpl_tf.experiment.run`).

These tests hold the loop to that: a method that `experiment.py` has never heard of trains through it once it is
registered, phases hand their models on (or drop them), `skip` and `after` work, `run` returns the trained model,
and the per-method declarations say what the old orchestration did (phase names, data, which one is main).
"""
import json

import gin
import pytest

from mpl_tf import experiment
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.algorithms.supervised import SupervisedModel, compile_supervised, finetune
from tests.conftest import ROOT

TWO_MOONS = [f"{ROOT}/gin/two_moons.gin"]
SMALL = ["run.steps = 20", "run.finetune_steps = 10", "run.steps_per_execution = 5", "run.checkpoint_every = 10",
         "run.summary_every = 10", "run.verbose = 0", "run.export = False"]


@pytest.fixture
def two_moons_gin():
  def parse(*bindings):
    gin.clear_config()
    experiment.parse_gin(TWO_MOONS, SMALL + list(bindings))
  yield parse
  gin.clear_config()


def test_a_method_unknown_to_the_experiment_runs_through_the_loop(two_moons_gin, monkeypatch, tmp_path):
  """Two supervised networks in a row, the second learning nothing but being scored: no code in experiment.py
  names this method, yet it trains, scores, skips, calls back and returns its main model."""
  calls = []

  def phases(builder):
    first = compile_supervised(builder, builder.network(1), "student", builder.steps)
    return [Phase("warm", lambda previous: first, "labeled", builder.steps, scores="all", main=True,
                  after=lambda model: calls.append(("after", int(model.global_step.numpy()))) or {"extra/x": 1.0}),
            Phase("never", lambda previous: pytest.fail("a skipped phase must not build"), "labeled", 5,
                  skip=lambda: True),
            Phase("second", lambda previous: calls.append(("second got", previous is first)) or first, "labeled",
                  builder.steps, scores="student", keep_student_as="_before_second"),
            *finetune(builder)]

  monkeypatch.setitem(experiment.METHODS, "toy", Method("toy", phases))
  two_moons_gin("run.method = 'toy'")
  result = experiment.run(str(tmp_path))
  assert calls == [("after", 20), ("second got", True)]
  assert isinstance(result.model, SupervisedModel) and result.metrics["step"] == 20
  assert result.metrics["extra/x"] == 1.0 and result.metrics["method"] == "toy"
  assert "student/accuracy_before_second" in result.metrics and "student/accuracy_before_finetune" in result.metrics
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["finetune", "warm"]
  assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics


def test_run_returns_the_trained_model_and_the_exported_student(two_moons_gin, tmp_path):
  two_moons_gin("run.finetune_steps = 0")
  result = experiment.run(str(tmp_path))
  assert type(result.model).__name__ == "MetaPseudoLabelsModel"
  assert result.student is result.model.eval_student
  assert int(result.model.global_step.numpy()) == 20 == result.metrics["step"]


@pytest.mark.parametrize("method, names, data", [
    ("mpl", ["mpl", "finetune"], ["train", "labeled"]),
    ("uda", ["train", "finetune"], ["train", "labeled"]),
    ("supervised", ["train", "finetune"], ["labeled", "labeled"]),
    ("pseudo_labels", ["teacher", "train", "finetune"], ["labeled", "train", "labeled"])])
def test_each_method_declares_the_phases_it_trains(two_moons_gin, tmp_path, method, names, data):
  two_moons_gin(f"run.method = '{method}'")
  bundle = experiment.load_data(0)
  builder = experiment.Builder(bundle, seed=0, steps=20, finetune_steps=10, teacher_steps=7, workdir=str(tmp_path))
  phases = builder.make(experiment.METHODS[method].phases, builder)
  assert [p.name for p in phases] == names and [p.data for p in phases] == data
  assert [p.name for p in phases if p.main] == [names[-2]]
  assert phases[0].steps == (7 if method == "pseudo_labels" else 20) and phases[-1].steps == 10


def test_distill_joins_mpl_only_when_it_has_steps(two_moons_gin, tmp_path):
  two_moons_gin("distill.steps = 30")
  builder = experiment.Builder(experiment.load_data(0), seed=0, steps=20, finetune_steps=0, teacher_steps=20,
                               workdir=str(tmp_path))
  assert [p.name for p in builder.make(experiment.METHODS["mpl"].phases, builder)] == ["mpl", "distill"]
  assert [p.name for p in builder.make(experiment.METHODS["uda"].phases, builder)] == ["train"]


def test_a_phase_with_unknown_data_or_scores_is_refused():
  with pytest.raises(ValueError, match="Phase.data"):
    Phase("x", lambda previous: previous, "unlabeled", 1)
  with pytest.raises(ValueError, match="Phase.scores"):
    Phase("x", lambda previous: previous, "train", 1, scores="teacher")
