"""The step benchmark's bookkeeping (tools/step_tables.py, tools/step_memory.py), on made-up figures.

The tool itself runs end to end in the slow accelerator test (`benchmark_step.py --quick`); here: which parts a
variant is made of, the ratios the tables print, and which flags a memory child inherits.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import step_memory  # noqa: E402  pylint: disable=wrong-import-position
import step_tables  # noqa: E402  pylint: disable=wrong-import-position


def test_parts_of_variants():
  assert step_tables.parts_of("hard") == {"student_eval_l": 3, "student_train_u": 1, "teacher_sup": 1}
  assert step_tables.parts_of("hard+uda+recompute") == {"student_eval_l": 3, "student_train_u": 1, "teacher_uda": 1}
  assert step_tables.parts_of("soft+uda")["student_meta_u"] == 1
  with pytest.raises(KeyError):
    step_tables.parts_of("medium")


def case(seconds, allocator, rss):
  return {"all_s": [seconds, seconds * 2, seconds * 3], "all_cpu_s": [seconds] * 3, "allocator_mib": allocator,
          "rss_mib": rss, "peak_mib": allocator}


def test_memory_and_time_ratios():
  parts = {f"part/{name}": case(0.1, 1.0, 1.0) for name in step_tables.PART_NAMES}
  report = {"images_per_step": 240, "steps": 3, "jit": [False], "variants": ["hard+uda"],
            "compare_keras_leaky_relu": True, "memory": "both",
            "cases": {"mpl/hard+uda": case(3.0, 1400.0, 1650.0), "supervised": case(2.0, 1000.0, 1100.0),
                      "mpl/hard+uda @keras-lrelu": case(3.3, 2100.0, 2200.0),
                      "supervised @keras-lrelu": case(2.0, 1400.0, 1500.0), **parts}}
  text = step_tables.render(report)
  figures = report["mpl"]["mpl/hard+uda"]
  assert figures["memory_to_supervised"] == {"allocator": pytest.approx(1.4), "rss": pytest.approx(1.5)}
  assert figures["ratio_to_supervised"]["cpu"] == pytest.approx(1.5)
  assert "| 1400, 1650 | 1.40, 1.50 |" in text
  # ours / Keras': cpu 3.0 / 3.3, best 3.0 / 3.3, allocator 1400 / 2100, rss 1650 / 2200; Keras' memory ratios
  assert "- mpl/hard+uda: 0.91, 0.91, 0.67, 0.75; 1.50, 1.47" in text


def test_memory_children_inherit_the_settings_not_the_parent_flags():
  argv = ["--model", "wrn28_2", "--output", "/tmp/x.json", "--jit=both", "--memory", "rss", "--quick",
          "--steps=5", "--variants=hard+uda", "--compare_keras_leaky_relu"]
  assert step_memory.child_argv(argv) == ["--model", "wrn28_2", "--quick", "--variants=hard+uda",
                                          "--compare_keras_leaky_relu"]
