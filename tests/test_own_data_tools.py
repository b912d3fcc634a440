"""Own-data tools: the comparison's verdict, the stand-ins, the views grid, and the CNN's automatic strides."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import agreement  # pylint: disable=wrong-import-position
import compare  # pylint: disable=wrong-import-position
import run_lib  # pylint: disable=wrong-import-position
import standins  # pylint: disable=wrong-import-position

from mpl_tf.models.cnn import auto_strides  # pylint: disable=wrong-import-position


def test_paired_stats_by_hand():
  p = run_lib.paired_stats([1.0, 2.0, 3.0])
  assert p["mean"] == 2.0 and p["std"] == 1.0 and p["t"] == pytest.approx(2.0 / (1.0 / 3 ** 0.5))
  assert (p["better"], p["equal"], p["worse"]) == (3, 0, 0)
  assert np.isnan(run_lib.paired_stats([0.5, 0.5])["t"])


def test_verdict_compares_with_the_best_baseline_and_needs_every_seed():
  # Well above supervised, but the best baseline (UDA, the smallest difference) decides.
  mixed = compare.verdict({"supervised": [5.0, 6.0, 7.0], "uda": [0.5, -0.4, 0.3]})
  assert mixed.startswith("No measurable difference") and "against uda" in mixed
  assert compare.verdict({"supervised": [3.0, 4.0, 5.0], "uda": [1.0, 1.5, 2.0]}).startswith("MPL helped")
  assert compare.verdict({"supervised": [-3.0, -4.0, -5.2]}).startswith("MPL hurt")
  # Two seeds never make a claim.
  assert compare.verdict({"supervised": [3.0, 4.0]}).startswith("No measurable difference")


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
  with_distill = compare.gap_lines(curve, [1.5, 2.5], {500: 1.25})
  assert with_distill[-3] == "| step | 250 | 500 | distill 500 | exported |"
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
