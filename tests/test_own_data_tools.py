"""Own-data tools: the comparison's verdict, the stand-ins, the views grid, and the CNN's automatic strides."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "studies", "student_gap"))  # agreement.py
import agreement  # pylint: disable=wrong-import-position
import standins  # pylint: disable=wrong-import-position

from mpl_tf import compare  # pylint: disable=wrong-import-position
from mpl_tf import runs as run_lib  # pylint: disable=wrong-import-position
from mpl_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position
from mpl_tf.models.cnn import auto_strides  # pylint: disable=wrong-import-position


def test_a_report_command_names_the_thread_count_it_was_measured_with(monkeypatch, tmp_path):
  monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
  assert run_lib.thread_prefix() == "TF_NUM_INTRAOP_THREADS=1 "
  workdir_lib.log_command(str(tmp_path), ["python", "-m", "mpl_tf.train", "--workdir=w"])  # the run's own record
  monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
  assert run_lib.thread_prefix() == ""
  workdir_lib.log_command(str(tmp_path), ["python", "-m", "mpl_tf.train", "--workdir=w"])
  first, second = (tmp_path / workdir_lib.COMMANDS_FILE).read_text().splitlines()
  assert first.endswith("&& TF_NUM_INTRAOP_THREADS=1 python -m mpl_tf.train --workdir=w")
  assert second.endswith("&& python -m mpl_tf.train --workdir=w")


def test_paired_stats_by_hand():
  p = run_lib.paired_stats([1.0, 2.0, 3.0])
  assert p["mean"] == 2.0 and p["std"] == 1.0 and p["t"] == pytest.approx(2.0 / (1.0 / 3 ** 0.5))
  assert (p["better"], p["equal"], p["worse"]) == (3, 0, 0)
  assert np.isnan(run_lib.paired_stats([0.5, 0.5])["t"])


def test_verdict_compares_each_part_with_its_own_control():
  """Made-up accuracies where MPL + distill beats plain UDA only through the distill phase: the verdict must credit
  the distill phase, not MPL, and compare MPL with the baseline that had the same extra phase."""
  students = {"supervised": [80.0, 81.0, 82.0], "uda": [90.0, 90.5, 91.0], "uda_distill": [92.0, 92.4, 93.1],
              "mpl_feedback_off": [92.1, 92.6, 93.1], "mpl": [92.0, 92.7, 93.0]}
  text = compare.verdict(students)
  assert text.startswith("What helped: the distill phase.")
  assert "The teacher's feedback (MPL's term): no measurable difference (mpl -0.03 +- 0.12 points against " \
         "mpl_feedback_off, better on 1 of 3 seeds)" in text
  assert "The distill phase: helped (uda_distill +2.00 +- 0.10 points against uda" in text
  assert "MPL as a whole, against the best baseline: no measurable difference (mpl +0.07 +- 0.21 points against " \
         "uda_distill" in text
  # Without the distill control, the main-phase part falls back to uda and MPL to the best baseline that ran.
  parts = {(arm, control) for arm, control, _, _ in compare.contrasts(
      {k: v for k, v in students.items() if k != "uda_distill"})}
  assert parts == {("mpl", "mpl_feedback_off"), ("mpl_feedback_off", "uda"), ("mpl", "uda")}


def test_a_part_helps_only_on_every_seed_with_t_above_two():
  assert compare.classify([1.0, 1.5, 2.0]) == "helped"
  assert compare.classify([-3.0, -4.0, -5.2]) == "hurt"
  assert compare.classify([5.0, 6.0, -0.1]) == "no measurable difference"  # one seed the other way
  assert compare.classify([3.0, 4.0]) == "no measurable difference"  # two seeds never make a claim
  assert compare.classify([0.1, 5.0, 0.1]) == "no measurable difference"  # all better, t = 1.03
  text = compare.verdict({"uda": [90.0, 90.0, 90.0], "mpl_feedback_off": [90.5, 90.4, 90.6],
                          "mpl": [91.6, 91.4, 91.5]})
  assert text.startswith("What helped: the teacher's feedback (MPL's term); a student learning only")
  # Called as a library with no baseline arm, the feedback is the only contrast and still counts as a part.
  assert compare.verdict({"mpl_feedback_off": [90.5, 90.4, 90.6], "mpl": [91.6, 91.4, 91.5]}).startswith(
      "What helped: the teacher's feedback (MPL's term).")


def test_standin_splits_are_disjoint_balanced_and_cover_the_digits():
  x, y, labeled, unlabeled, test = standins.split_digits(seed=3)
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.uint8 and x.max() == 255
  assert not (set(labeled) & set(test) or set(labeled) & set(unlabeled) or set(test) & set(unlabeled))
  assert len(labeled) + len(unlabeled) + len(test) == 1797
  assert np.all(np.bincount(y[labeled]) == 10) and np.all(np.bincount(y[test]) == 50)


def test_generated_shapes_and_colourised_digits(tmp_path):
  images, labels = standins.shapes(4, 32, seed=0)
  assert images.shape == (20, 32, 32, 1) and np.all(np.bincount(labels) == 4)
  grey = np.zeros((2, 4, 4, 1), np.uint8)
  grey[:, 1:3, 1:3] = 255
  rgb = standins.colourise(grey, seed=0)
  assert rgb.shape == (2, 4, 4, 3)
  assert np.all(rgb[:, 1, 1].astype(int).sum(-1) > rgb[:, 0, 0].astype(int).sum(-1))  # strokes brighter
  path = standins.build("digits28", str(tmp_path), seed=0)
  with np.load(path) as data:
    assert data["x_train"].shape == (100, 28, 28, 1) and data["x_test"].shape == (500, 28, 28, 1)


@pytest.mark.parametrize("side, expected", [(8, (1, 2, 1)), (16, (2, 2, 1)), (28, (2, 2, 2)), (32, (2, 2, 2))])
def test_auto_strides_end_near_four_by_four(side, expected):
  assert auto_strides((side, side, 1), 3) == expected


def test_gap_curve_averages_the_teacher_student_gap_over_seeds_per_step(tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  runs = []
  for seed, gaps in enumerate(({250: 0.5, 500: 0.02}, {250: 0.3, 500: -0.01})):
    workdir = tmp_path / f"mpl.seed{seed}"
    writer = tf.summary.create_file_writer(str(workdir / "summaries" / "mpl"))
    with writer.as_default():
      for step, gap in gaps.items():
        tf.summary.scalar("test/teacher_minus_student", gap, step=step)
        tf.summary.scalar("test/student/accuracy", 0.9, step=step)  # other tags are ignored
    writer.flush()
    runs.append(str(workdir))
  curve = compare.gap_curve(runs)
  assert list(curve) == [250, 500]
  assert curve[250] == pytest.approx(40.0) and curve[500] == pytest.approx(0.5)
  lines = compare.gap_lines(curve, [1.5, 2.5])
  assert lines[-1] == "| gap | +40.0 | +0.5 | +2.0 |"
  assert "eval_every = 0" in compare.gap_lines({}, [1.0])[0]
  with_distill = compare.gap_lines(curve, [1.5, 2.5], {750: 1.25})  # steps continue across phases
  assert with_distill[-3] == "| step | 250 | 500 | 750 (distill) | exported |"
  assert with_distill[-1] == "| gap | +40.0 | +0.5 | +1.2 | +2.0 |"
  assert compare.gap_curve(runs, phase="distill") == {}


def test_validation_standin_holds_out_unlabeled_images_and_leaves_the_test_images_out(tmp_path):
  x, y, labeled, unlabeled, test = standins.split_digits(seed=0)
  validation, rest = standins.hold_out_validation(y, unlabeled, per_class=20)
  assert len(validation) == 200 and np.all(np.bincount(y[validation]) == 20)
  assert set(validation) | set(rest) == set(unlabeled) and not set(validation) & set(rest)
  with np.load(standins.build("digits_npz", str(tmp_path), seed=0, validation=True)) as val, \
       np.load(standins.build("digits_npz", str(tmp_path), seed=0)) as full:
    assert np.array_equal(val["x_train"], full["x_train"])  # the same labeled images
    held = {im.tobytes() for im in val["x_test"]}
    assert held <= {im.tobytes() for im in full["x_unlabeled"]}
    assert not held & {im.tobytes() for im in full["x_test"]}
    assert len(val["x_unlabeled"]) == len(full["x_unlabeled"]) - 200


def test_fresh_shapes_validation_test_part_is_new_images_beside_the_same_training_parts(tmp_path):
  with np.load(standins.build("shapes32", str(tmp_path), seed=0, validation=True, fresh_validation_test=50)) as big, \
       np.load(str(tmp_path / "shapes32_val.npz")) as val, \
       np.load(standins.build("shapes32", str(tmp_path), seed=0)) as full:
    for key in ("x_train", "y_train", "x_unlabeled"):
      assert np.array_equal(big[key], val[key]), key
    assert len(big["x_test"]) == 50 and np.all(np.bincount(big["y_test"]) == 10)
    seen = {im.tobytes() for part in ("x_train", "x_unlabeled", "x_test") for im in full[part]}
    assert not {im.tobytes() for im in big["x_test"]} & seen
  with pytest.raises(ValueError, match="shapes32 validation"):
    standins.build("digits28", str(tmp_path), seed=0, validation=True, fresh_validation_test=50)


def test_agreement_counts_matching_classes_and_each_networks_accuracy():
  teacher, student, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 0]), np.array([0, 1, 2, 1])
  assert agreement.agreement(teacher, student) == {"agreement": 0.5}
  assert agreement.agreement(teacher, student, labels) == {"agreement": 0.5, "teacher": 0.75, "student": 0.5}


def test_view_grid_shows_the_originals_then_views_drawn_as_training_draws_them():
  """`mpl-views`: column 0 is the image itself, the strong views differ from the weak one and from each other, and
  the same seed draws the same grid (the views are training's, from the example seeds)."""
  import gin  # pylint: disable=import-outside-toplevel
  from mpl_tf import experiment, views  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  try:
    experiment.parse_gin(["gin/digits.gin"], [])
    data = experiment.load_data(0)
    grid, labels = views.view_grid(data, num_images=3, num_strong=2, seed=0)
    again, _ = views.view_grid(data, num_images=3, num_strong=2, seed=0)
    other, _ = views.view_grid(data, num_images=3, num_strong=2, seed=1)
  finally:
    gin.clear_config()
  assert grid.shape == (3, 4, 8, 8, 1) and 0.0 <= grid.min() and grid.max() <= 1.0
  names = data.class_names or tuple(str(c) for c in range(data.num_classes))
  assert len(labels) == 3 and set(labels) <= set(names)
  np.testing.assert_array_equal(grid, again)
  np.testing.assert_array_equal(grid[:, 0], other[:, 0])  # the originals do not depend on the draw seed
  assert not np.array_equal(grid[:, 2:], other[:, 2:])
  for k in (2, 3):
    assert not np.allclose(grid[:, k], grid[:, 1])
  assert not np.allclose(grid[:, 2], grid[:, 3])
