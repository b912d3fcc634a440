"""The optional phase after MPL (`distill.steps`): the student learns from the frozen final teacher."""
import json

import numpy as np
import tensorflow as tf

from tests.conftest import train


def run_cli(workdir, *bindings):
  return train(workdir, ["gin/two_moons.gin"], "run.verbose = 0", *bindings)


def variables(checkpoint_dir, prefix):
  """{name under `prefix`: value} of the latest checkpoint in `checkpoint_dir`."""
  reader = tf.train.load_checkpoint(str(checkpoint_dir))
  return {name[len(prefix):]: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if name.startswith(prefix) and "OPTIMIZER_SLOT" not in name}


def test_distill_trains_the_mpl_student_on_the_frozen_teacher(tmp_path):
  proc = run_cli(tmp_path, "run.steps = 100", "distill.steps = 60", "run.finetune_steps = 10",
                 "run.eval_every = 30", "distill/optimizer.learning_rate = 0.1",
                 "MetaPseudoLabelsModel.ema_decay = 0.9")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  for key in ("student/accuracy", "student/accuracy_after_mpl", "student/accuracy_before_finetune"):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["step"] == 100  # the MPL phase's step, as without the extra phase
  mpl, distill = tmp_path / "checkpoints" / "mpl", tmp_path / "checkpoints" / "distill"
  teacher_before, teacher_after = variables(mpl, "model/teacher/"), variables(distill, "model/teacher/")
  assert teacher_before and teacher_before.keys() == teacher_after.keys()
  for name, value in teacher_before.items():  # the teacher is frozen: not a weight nor a BN statistic moves
    np.testing.assert_array_equal(value, teacher_after[name], err_msg=name)
  # The distilled network is MPL's evaluated student (its EMA copy), and it did train.
  student_start, student_end = variables(mpl, "model/ema_student/"), variables(distill, "model/student/")
  assert student_start.keys() == student_end.keys()
  assert any(not np.array_equal(student_start[n], student_end[n]) for n in student_start)
  assert (tmp_path / "summaries" / "distill").is_dir()


def test_distill_starts_from_the_mpl_student_itself(tmp_path):
  """At a zero distill learning rate the distilled student ends where it started: it must be MPL's evaluated (EMA)
  student, weight for weight, and score as it did after MPL. A phase that built a fresh network would pass the
  test above (a student that trained) and fail here."""
  proc = run_cli(tmp_path, "run.steps = 40", "distill.steps = 10", "run.finetune_steps = 5",
                 "distill/optimizer.learning_rate = 0.0", "distill/optimizer.weight_decay = 0.0",
                 "MetaPseudoLabelsModel.ema_decay = 0.9")
  assert proc.returncode == 0, proc.stderr[-3000:]
  mpl, distill = tmp_path / "checkpoints" / "mpl", tmp_path / "checkpoints" / "distill"
  start, end = variables(mpl, "model/ema_student/"), variables(distill, "model/student/")
  assert start and start.keys() == end.keys()
  for name, value in start.items():
    np.testing.assert_array_equal(value, end[name], err_msg=name)
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["student/accuracy_before_finetune"] == metrics["student/accuracy_after_mpl"]


def test_distill_settings_leave_other_methods_alone(tmp_path):
  """Like every MPL binding, `distill.*` is ignored by the baselines that share a recipe (mpl-compare)."""
  proc = run_cli(tmp_path, "run.method = 'supervised'", "run.steps = 10", "distill.steps = 5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert "student/accuracy_after_mpl" not in metrics
  assert not (tmp_path / "checkpoints" / "distill").exists()


def test_uda_distill_is_uda_then_the_same_distill_phase_from_a_frozen_copy_of_itself(tmp_path):
  """The baseline's control for the distill phase (mpl-compare): UDA's network, frozen, teaches itself. At a zero
  distill learning rate the distilled network is the UDA network bit for bit, and its teacher is that network too."""
  proc = run_cli(tmp_path, "run.method = 'uda_distill'", "build_dataset.two_views = True", "run.steps = 40",
                 "distill.steps = 10", "run.finetune_steps = 5", "distill/optimizer.learning_rate = 0.0",
                 "distill/optimizer.weight_decay = 0.0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  uda_end = variables(tmp_path / "checkpoints" / "train", "model/student/")
  distill = tmp_path / "checkpoints" / "distill"
  student, teacher = variables(distill, "model/student/"), variables(distill, "model/teacher/")
  assert uda_end and uda_end.keys() == student.keys() == teacher.keys()
  for name, value in uda_end.items():
    np.testing.assert_array_equal(value, student[name], err_msg=name)
    np.testing.assert_array_equal(value, teacher[name], err_msg=name)
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["student/accuracy_before_finetune"] == metrics["student/accuracy_after_mpl"]
  refused = run_cli(tmp_path / "no_distill", "run.method = 'uda_distill'", "build_dataset.two_views = True",
                    "distill.steps = 0")
  assert refused.returncode != 0 and "distill.steps > 0" in refused.stderr
