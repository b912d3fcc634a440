"""`mpl_tf.progress.RunProgress`: one progress line across a run's phases, plain lines off a terminal, the
held-out accuracies on a line of their own, TensorBoard offsets. Output only: no timing is asserted."""
import io

import pytest

from mpl_tf.progress import RunProgress


def test_offsets_put_each_phase_after_the_ones_before():
  progress = RunProgress([("mpl", 1500), ("distill", 2000), ("finetune", 200)], stream=io.StringIO())
  assert [progress.offset(p) for p in ("mpl", "distill", "finetune")] == [0, 1500, 3500]
  assert progress.total == 3700
  with pytest.raises(KeyError, match="unknown phase 'teacher'"):
    progress.offset("teacher")


def test_off_a_terminal_about_ten_plain_lines_a_phase_with_the_runs_share():
  out = io.StringIO()
  progress = RunProgress([("mpl", 100), ("finetune", 100)], stream=out, interactive=False)
  progress.start_phase("mpl", 0)
  for step in range(1, 101):
    progress.update("mpl", step, {"teacher/loss": 1.5, "student/loss": 2.0, "other": 3.0})
  lines = out.getvalue().splitlines()
  assert lines[0] == "[mpl] step 0 of 100" and len(lines) == 1 + 10
  assert lines[-1].startswith("[mpl] 100/100  teacher/loss 1.5  student/loss 2  | run 50 %, ETA ")
  assert "other" not in out.getvalue() and "\r" not in out.getvalue()


def test_on_a_terminal_one_line_redrawn_and_evaluations_on_their_own_lines():
  out = io.StringIO()
  progress = RunProgress([("mpl", 4)], stream=out, interactive=True)
  progress.start_phase("mpl", 2)
  progress.update("mpl", 3, {"mpl/h": 0.25})
  progress.evaluation("mpl", 3, "test", {"student/accuracy": 0.5, "teacher/accuracy": 0.625, "student/loss": 1.0})
  progress.update("mpl", 4, {"mpl/h": 0.5})
  assert out.getvalue() == ("[mpl] step 2 of 4 (resumed)\n"
                            "\r[mpl] 3/4  mpl/h 0.25  | run 75 %, ETA " + out.getvalue().split("ETA ")[1].split("\x1b")[0]
                            + "\x1b[K\n[mpl] step 3: test accuracy: student 50.00 %, teacher 62.50 %\n"
                            "\r[mpl] 4/4  mpl/h 0.5  | run 100 %\x1b[K\n")
