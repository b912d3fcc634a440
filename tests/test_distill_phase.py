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


def test_distill_settings_leave_other_methods_alone(tmp_path):
  """Like every MPL binding, `distill.*` is ignored by the baselines that share a recipe (tools/compare.py)."""
  proc = run_cli(tmp_path, "run.method = 'supervised'", "run.steps = 10", "distill.steps = 5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert "student/accuracy_after_mpl" not in metrics
  assert not (tmp_path / "checkpoints" / "distill").exists()
