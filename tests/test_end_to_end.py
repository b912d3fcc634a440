"""`python -m mpl_tf.train` end to end: phases, files, export, resume after a kill, NaN stop, predict."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import runs as run_lib
from tests.conftest import train, train_killed_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))  # standins


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """One smoke-sized MPL run on the real digits: every phase, a few steps each, held-out curves every 3 steps."""
  workdir = tmp_path_factory.mktemp("digits")
  proc = train(workdir, ["gin/digits.gin", "gin/smoke.gin"], "run.eval_every = 3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_smoke_run_writes_config_checkpoints_summaries_metrics_and_export(digits_run):
  metrics = json.loads((digits_run / "metrics.json").read_text())
  assert metrics["step"] == 6 and metrics["method"] == "mpl" and metrics["split"] == "digits.seed0"
  for key in ("student/accuracy", "teacher/accuracy", "student/accuracy_before_finetune"):
    assert 0.0 <= metrics[key] <= 1.0
  config = (digits_run / "operative_config.gin").read_text()
  assert "uda.weight = 1.0" in config and "build_dataset.name = 'digits'" in config
  for phase, step in (("mpl", 6), ("finetune", 3)):
    assert tf.train.latest_checkpoint(str(digits_run / "checkpoints" / phase)).endswith(f"ckpt-{step}")
    assert list((digits_run / "summaries" / phase).glob("events.out.tfevents.*"))
  names = {name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(digits_run / "checkpoints/mpl")))}
  for part in ("model/teacher/", "model/student/", "model/ema_student/", "model/teacher_optimizer/",
               "model/student_optimizer/", "model/global_step", "model/h_baseline", "iterator/"):
    assert any(n.startswith(part) for n in names), part
  tags = set(run_lib.scalars(str(digits_run), "mpl"))
  assert {"mpl/h", "mpl/h_baseline", "uda/mask_ratio", "lr/student", "lr/teacher", "teacher/loss"} <= tags


def test_held_out_curves_give_both_accuracies_and_the_teacher_student_gap(digits_run):
  # digits holds no validation split out, so the curves are on the test split and say so in their tags.
  mpl = run_lib.scalars(str(digits_run), "mpl")
  assert set(mpl["test/teacher_minus_student"]) == {4, 6}  # eval_every 3 at chunks of 2 steps
  for step in (4, 6):
    gap = mpl["test/teacher/accuracy"][step] - mpl["test/student/accuracy"][step]
    assert mpl["test/teacher_minus_student"][step] == pytest.approx(gap, abs=1e-6)
  assert {"test/student/top5_accuracy", "test/teacher/top5_accuracy"} <= set(mpl)  # 10 classes: top-5 too
  finetune = run_lib.scalars(str(digits_run), "finetune")
  assert "test/student/accuracy" in finetune and "test/teacher_minus_student" not in finetune
  # TensorBoard's steps continue across phases (issue 27, item 7): finetuning's 3 steps follow MPL's 6.
  assert set(finetune["test/student/accuracy"]) == {6 + 3}
  assert not any(tag.startswith("validation/") for tag in mpl)


def test_export_serves_the_live_ema_student_and_refuses_bad_inputs(digits_run):
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(digits_run / "operative_config.gin")], [])
  tf.random.set_global_generator(tf.random.Generator.from_seed(0))  # as run() does, for keras-cv under determinism
  data = experiment.load_data(0)
  builder = experiment.Builder(data, seed=0, steps=6, finetune_steps=3, teacher_steps=6, workdir=str(digits_run))
  phases = builder.make(experiment.METHODS["mpl"].phases, builder)
  assert [p.name for p in phases] == ["mpl", "finetune"]
  model = phases[0].model(None)
  tuned = phases[1].model(model)
  tf.train.Checkpoint(model=tuned).restore(
      tf.train.latest_checkpoint(str(digits_run / "checkpoints/finetune"))).expect_partial()
  gin.clear_config()
  images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
  serve = tf.saved_model.load(str(digits_run / "export" / "student")).signatures["serving_default"]
  out = serve(images=tf.constant(images))
  # The export is the student whose accuracy metrics.json reports: finetuning's evaluated student, its EMA copy
  # here (the digits recipe binds SupervisedModel.ema_decay), not the raw finetuned network.
  assert tuned.ema_student is not None
  live = tf.nn.softmax(tuned.eval_student(images.astype(np.float32) / 255.0, training=False)).numpy()
  raw = tf.nn.softmax(tuned.student(images.astype(np.float32) / 255.0, training=False)).numpy()
  assert not np.allclose(raw, live, rtol=1e-5, atol=1e-6), "the check could not tell the EMA copy from the raw network"
  np.testing.assert_allclose(out["probabilities"].numpy(), live, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["labels"].numpy(), live.argmax(-1))
  with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
    serve(images=tf.constant(images.astype(np.float32)))
  with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
    serve(images=tf.zeros((2, 16, 16, 1), tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match="must have shape"):
    serve(images=tf.zeros((2, 8, 8, 3), tf.uint8))
  del keras


def test_predict_prints_a_row_per_image_resizes_and_reports_unreadable_inputs(digits_run, tmp_path):
  export = f"{digits_run}/export/student"
  metadata = json.loads((digits_run / "export" / "student" / "assets.extra" / "mpl_tf.json").read_text())
  assert metadata["dataset"] == "digits" and metadata["split_name"] == "digits.seed0"
  assert metadata["num_classes"] == 10 and "build_dataset.name = 'digits'" in metadata["config"]
  good = tmp_path / "good.npz"
  np.savez(good, x_test=np.zeros((3, 8, 8, 1), np.uint8))
  bigger = tmp_path / "bigger.npz"  # another size: resized to the export's 8x8
  np.savez(bigger, x_test=np.zeros((2, 16, 16, 1), np.uint8))
  proc = subprocess.run([sys.executable, "-m", "mpl_tf.predict", f"--export_dir={export}", str(good), str(bigger)],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = proc.stdout.splitlines()
  assert rows[0] == "input,label,class_name,probability" and len(rows) == 6
  assert all(0 <= int(r.split(",")[1]) < 10 for r in rows[1:])
  assert "warning" not in proc.stderr
  tiny = tmp_path / "tiny.npz"  # 1x1 images of an 8x8 model: answered, with a warning (issue 27, item 1)
  np.savez(tiny, x_test=np.full((2, 1, 1, 1), 200, np.uint8))
  proc = subprocess.run([sys.executable, "-m", "mpl_tf.predict", f"--export_dir={export}", str(tiny)],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stderr[-2000:]
  assert (f"mpl-predict: warning: 2 input(s) far smaller than the model's 8x8 input (the first: {tiny}[0], 1x1)"
          in proc.stderr)
  bad = tmp_path / "bad.npz"
  np.savez(bad, images=np.zeros((3, 8, 8, 1), np.uint8))
  proc = subprocess.run([sys.executable, "-m", "mpl_tf.predict", f"--export_dir={export}", str(bad)],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2 and "no 'x_test' or 'x' array" in proc.stderr


RESUME = ("gin/two_moons.gin",)
RESUME_BINDINGS = ("run.steps = 600", "run.steps_per_execution = 50", "run.summary_every = 50",
                   "run.checkpoint_every = 100", "run.verbose = 0", "run.export = False")


def final_weights(workdir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(workdir / "checkpoints" / "mpl")))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "ITERATOR" not in name}


KILL_AT = 300  # the MPL phase's checkpoint after which the interrupted run is killed


# Slow: tests/test_reproducible_runs.py kills and resumes digits, own data and a TFDS paper recipe (augmented views,
# dropout) in the default suite; this TwoMoon run (88 s beside a busy loop) adds no path of its own.
@pytest.mark.slow
def test_a_run_killed_in_the_middle_resumes_to_the_same_weights(tmp_path):
  straight = tmp_path / "straight"
  assert train(straight, RESUME, *RESUME_BINDINGS).returncode == 0
  killed = tmp_path / "killed"
  proc = train_killed_at(KILL_AT, killed, RESUME, *RESUME_BINDINGS)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  interrupted_at = tf.train.latest_checkpoint(str(killed / "checkpoints" / "mpl"))
  assert interrupted_at.endswith(f"ckpt-{KILL_AT}") and not (killed / "metrics.json").exists()
  resumed = train(killed, RESUME, *RESUME_BINDINGS)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  a, b = final_weights(straight), final_weights(killed)
  assert a.keys() == b.keys() and any("global_step" in k for k in a)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert json.loads((straight / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())


def test_a_nan_loss_stops_the_run_naming_step_and_metric_and_keeps_the_last_good_checkpoint(tmp_path):
  """A healthy first leg saves step 100; a second leg whose teacher turns NaN must save nothing."""
  uda = ("build_dataset.two_views = True", "build_dataset.noise_stddev = 0.2", "run.checkpoint_every = 50",
         "uda.weight = 1.0")
  first = train(tmp_path, RESUME, *RESUME_BINDINGS, *uda, "run.steps = 100")
  assert first.returncode == 0, first.stderr[-2000:]
  good = tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "mpl"))
  assert good.endswith("ckpt-100")
  (tmp_path / "metrics.json").unlink()
  # noise of 1e38 on the strong view overflows the inputs: the teacher's logits are NaN from the second leg's
  # first step (the data is not in the checkpoint, so the resumed run takes the new binding)
  proc = train(tmp_path, RESUME, *RESUME_BINDINGS, *uda, "run.steps = 400",
               "build_dataset.noise_stddev = 1e38", flags=("--allow_config_change",))
  assert proc.returncode != 0
  assert "non-finite values in the steps after 100" in proc.stderr
  assert "MPL teacher logits on the unlabeled batch" in proc.stderr
  assert f"Last good checkpoint: {good}" in proc.stderr
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "mpl")) == good
  for name, value in final_weights(tmp_path).items():
    if value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name
  assert not (tmp_path / "metrics.json").exists()


# Slow: a digits smoke run in each policy (float16 with its loss-scale optimizer; bfloat16 without).
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_end_to_end_with_float32_losses_and_export(tmp_path, policy):
  proc = train(tmp_path, ["gin/digits.gin", "gin/smoke.gin"], f"run.mixed_precision = '{policy}'")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert all(np.isfinite(v) for k, v in metrics.items() if k.endswith("accuracy") or k.endswith("loss"))
  serve = tf.saved_model.load(str(tmp_path / "export" / "student")).signatures["serving_default"]
  out = serve(images=tf.zeros((2, 8, 8, 1), tf.uint8))
  assert out["probabilities"].dtype == tf.float32
  np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)


def test_own_data_defaults_run_end_to_end_on_an_npz(tmp_path):
  # gin/own_data.gin as a user runs it (weak-view student, soft targets, held-out curves, the distill phase on the
  # strong view), a few steps a phase.
  import standins  # pylint: disable=import-outside-toplevel
  path = standins.build("digits_npz", str(tmp_path), seed=0)
  workdir = tmp_path / "run"
  typed = os.path.relpath(path, ROOT)  # as a user types it, from the directory the command runs in
  proc = train(workdir, ["gin/own_data.gin", "gin/smoke.gin"], f"build_dataset.path = '{typed}'",
               "run.eval_every = 2", "distill.steps = 4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The recorded configuration names the data absolutely, the command as typed is kept beside it, and evaluate
  # works from another directory (it failed with "no .npz file at ..." when the path was recorded as typed).
  assert f"'{os.path.abspath(path)}'" in (workdir / "config.gin").read_text() and not os.path.isabs(typed)
  assert typed in (workdir / "commands.log").read_text()
  elsewhere = _evaluate(f"--workdir={workdir}", cwd=tmp_path)
  assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
  config = (workdir / "operative_config.gin").read_text()
  for line in ("MetaPseudoLabelsModel.student_view = 'weak'", "MetaPseudoLabelsModel.pseudo_labels = 'soft'",
               "build_dataset.name = 'npz'"):
    assert line in config
  assert json.loads((workdir / "augmentation.json").read_text())["flip"] is False
  curves = run_lib.scalars(str(workdir), "mpl")
  assert set(curves["test/teacher_minus_student"]) == {2, 4, 6}
  assert set(run_lib.scalars(str(workdir), "distill")["test/teacher_minus_student"]) == {6 + 2, 6 + 4}  # after MPL's 6
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["teacher/accuracy"] > 0.0 and "student/accuracy_after_mpl" in metrics
  # studies/student_gap/agreement.py reads both networks back from the distill checkpoint and scores them as the
  # run did.
  tool = subprocess.run([sys.executable, "studies/student_gap/agreement.py", f"--workdir={workdir}", f"--npz={path}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert tool.returncode == 0, tool.stderr[-3000:]
  test_line = next(line.split() for line in tool.stdout.splitlines() if line.strip().startswith("test"))
  distilled = 100 * metrics["student/accuracy_before_finetune"]  # the student as the distill phase left it
  assert float(test_line[test_line.index("student") + 1]) == pytest.approx(distilled, abs=0.051)


def _evaluate(*flags, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT)  # from another directory, the package of this checkout
  return subprocess.run([sys.executable, "-m", "mpl_tf.evaluate", *flags], cwd=cwd, capture_output=True, text=True,
                        timeout=300, check=False, env=env)


def test_evaluate_a_run_reproduces_its_metrics_and_writes_the_report(digits_run, tmp_path):
  run = digits_run
  metrics = json.loads((run / "metrics.json").read_text())
  proc = _evaluate(f"--workdir={run}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((run / "evaluation" / "test.json").read_text())
  # The exported student and the restored teacher score exactly what training reported: no retraining.
  assert report["student"]["accuracy"] == pytest.approx(metrics["student/accuracy"], abs=1e-6)
  assert report["student"]["top5_accuracy"] == pytest.approx(metrics["student/top5_accuracy"], abs=1e-6)
  assert report["teacher"]["accuracy"] == pytest.approx(metrics["teacher/accuracy"], abs=1e-6)
  assert report["student"]["num_examples"] == 500 and len(report["class_names"]) == 10
  assert np.array(report["student"]["confusion_matrix"]).sum() == 500
  assert os.path.getsize(report["student"]["confusion_png"]) > 1000
  assert "student: top-1" in proc.stdout and "teacher: top-1" in proc.stdout
  # An export alone, on the dataset its export records, with a validation split held out by a binding.
  proc = _evaluate(f"--export_dir={run}/export/student", "--split=validation",
                   "--gin_bindings=build_dataset.num_validation = 100", f"--out_dir={tmp_path}/alone")
  assert proc.returncode == 0, proc.stderr[-2000:]
  alone = json.loads((tmp_path / "alone" / "validation.json").read_text())
  assert alone["student"]["num_examples"] == 100 and "teacher" not in alone
  assert alone["dataset"].startswith("digits") and alone["class_names"] == report["class_names"]
