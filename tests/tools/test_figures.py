"""Every figure quoted in README, RESULTS, BENCHMARKS, the gin headers and the training command's end-of-run summary
agrees with the results JSON it comes from, and every results JSON under studies/ records the command that
regenerates it (tools/figures.py). The checker itself is run on made-up documents that break each rule."""
import ast
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import figures  # pylint: disable=wrong-import-position

SHAPES = "studies/attribution/own_data_shapes32.json"


def test_every_quoted_figure_agrees_with_its_json():
  proc = subprocess.run([sys.executable, "tools/figures.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_the_training_commands_quotes_name_documents_that_exist():
  """`mpl_tf.train.QUOTED_FIGURES`, read from the source (importing the entry point would define its flags)."""
  with open(os.path.join(ROOT, "mpl_tf", "train.py")) as f:
    tree = ast.parse(f.read())
  (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "QUOTED_FIGURES" for t in node.targets)]
  quoted = ast.literal_eval(value)
  assert set(quoted) == {"digits", "two_moons"}
  for pairs in quoted.values():
    for _, where in pairs:
      assert os.path.isfile(os.path.join(ROOT, where)), where


def test_a_figure_that_disagrees_with_its_json_is_named():
  spec = f"mean {SHAPES} mpl student/accuracy"
  right = figures.render(spec)
  assert right == "54.93 +- 1.53"  # the report's figure (studies/attribution/own_data_shapes32.md)
  good = f"MPL <!--fig {spec}-->{right}<!--/fig--> and UDA <!--fig diff {SHAPES} uda_distill uda-->+2.07<!--/fig-->"
  assert figures.marked_problems("doc.md", good) == []
  bad = good.replace(right, "54.90 +- 1.53")
  assert figures.marked_problems("doc.md", bad) == [
      f"doc.md: '{spec}' reads '54.90 +- 1.53', its JSON gives '54.93 +- 1.53'"]
  assert figures.rendered(bad) == good
  assert figures.quoted_problems("x.gin", "# Expected: 54.93 +- 1.53", [spec]) == []
  assert len(figures.quoted_problems("x.gin", "# Expected: 54.9", [spec])) == 1


def test_paired_figures_follow_the_reports_rule():
  """The distill phase on shapes: +2.07 +- 0.76, better on every seed (the report's paired table)."""
  assert figures.render(f"paired {SHAPES} uda_distill uda") == "+2.07 +- 0.76"
  assert figures.render(f"better {SHAPES} uda_distill uda") == "better on 3 of 3 seeds"
  with pytest.raises(KeyError, match="no arm 'udaa'"):
    figures.render(f"mean {SHAPES} udaa student/accuracy")


def test_a_results_json_without_its_command_is_named(tmp_path):
  study = tmp_path / "studies" / "one"
  study.mkdir(parents=True)
  (study / "with.json").write_text(json.dumps({"command": "python x.py", "results": {}}))
  (study / "per_entry.json").write_text(json.dumps({"a": {"command": "python x.py --label=a"}}))
  (study / "without.json").write_text(json.dumps({"results": {"mpl": []}}))
  assert figures.uncommanded(str(tmp_path)) == ["studies/one/without.json"]
