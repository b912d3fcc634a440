"""Every figure quoted in README, RESULTS, BENCHMARKS, the gin headers and the training command's end-of-run summary
agrees with the results JSON it comes from, and every results JSON under studies/ records the command that
regenerates it (tools/figures.py). The checker itself is run on made-up documents that break each rule."""
import ast
import json
import os
import re
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
  folder = os.path.join(ROOT, "mpl_tf", "algorithms")
  methods = set()
  for name in os.listdir(folder):
    if name.endswith(".py"):
      with open(os.path.join(folder, name)) as f:
        methods |= set(re.findall(r'Method\("(\w+)"', f.read()))
  assert {"mpl", "uda", "supervised", "reduced_mpl"} <= methods
  for triples in quoted.values():
    for _, where, for_methods in triples:
      assert os.path.isfile(os.path.join(ROOT, where)), where
      assert set(for_methods) <= methods, for_methods  # each names a method that exists


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


def test_a_figure_whose_json_is_missing_is_named_not_a_crash():
  text = "<!--fig value studies/none/missing.json a.b-->1<!--/fig--> <!--fig value " + SHAPES + " no.such-->1<!--/fig-->"
  found = figures.marked_problems("doc.md", text)
  assert len(found) == 2
  assert found[0].startswith("doc.md: 'value studies/none/missing.json a.b' cannot be rendered (FileNotFoundError")
  assert "cannot be rendered (KeyError" in found[1] and "no 'no'" in found[1]


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


def test_benchmark_figures_are_read_from_where_the_json_holds_them():
  """value / ratio / range name a figure by its path in a benchmark's JSON; a wrong path names the missing key."""
  import figure_values  # pylint: disable=import-outside-toplevel
  data = {"command": "python tools/x.py", "results": [{"phases": {"mpl": {"total": 1170000, "iterator": 8400}}}],
          "cases": {"a": {"mib": 946.4}, "b": {"mib": 1387.0}, "a jit": {"mib": 1.5}}}
  assert figure_values.render("value", data, ["results.0.phases.mpl.total", ",.0f"]) == "1,170,000"
  assert figure_values.render("command", data, []) == "`python tools/x.py`"
  assert figure_values.render("value", data, ["cases.a.mib"]) == "946.40"
  assert figure_values.render("value", data, ["cases.a%20jit.mib", ".1f"]) == "1.5"
  assert figure_values.render("ratio", data, ["cases.a.mib", "cases.b.mib"]) == "0.68"  # 946.4 / 1387 = 0.682
  assert figure_values.render("range", data, [".0f", "cases.a.mib", "cases.b.mib"]) == "946-1387"
  assert figure_values.render("range", data, [".0f", "cases.a.mib", "cases.a.mib"]) == "946"
  with pytest.raises(KeyError, match="no 'c' \\(there: a, b, a jit\\)"):
    figure_values.render("value", data, ["cases.c.mib"])


def test_a_step_benchmarks_quoted_ratio_is_the_one_its_table_shows():
  """A made-up benchmark_step run of one variant: MPL / parts and MPL / supervised in CPU time, by hand."""
  import figure_values  # pylint: disable=import-outside-toplevel
  def case(cpu, mib):
    return {"all_s": [cpu, cpu + 1.0, cpu], "all_cpu_s": [cpu] * 3, "allocator_mib": mib, "rss_mib": mib + 100,
            "peak_mib": mib}
  report = {"images_per_step": 240, "jit": [False], "steps": 3, "variants": ["hard"], "cases": {
      "mpl/hard": case(2.4, 980.0), "supervised": case(2.0, 950.0), "part/teacher_sup": case(1.2, 500.0),
      "part/student_eval_l": case(0.05, 6.0), "part/student_train_u": case(1.0, 450.0),
      **{f"part/{p}": case(1.0, 1.0) for p in ("teacher_uda", "student_meta_u", "student_grad_l")}}}
  # hard without UDA: teacher_sup + 3 student_eval_l + student_train_u = 1.2 + 0.15 + 1.0 = 2.35 CPU s
  assert figure_values.render("value", report, ["mpl.mpl/hard.ratio_to_parts.cpu"]) == "1.02"  # 2.4 / 2.35
  assert figure_values.render("value", report, ["mpl.mpl/hard.ratio_to_supervised.cpu"]) == "1.20"  # 2.4 / 2.0
  assert figure_values.render("value", report, ["medians.supervised.wall"]) == "2.00"  # median of 2.0, 3.0, 2.0
  table = figure_values.render("step_table", report, [])  # memory / supervised: 980 / 950, 1080 / 1050
  assert "| mpl/hard | 2.40 | 100 | 2.40 | 2.40 | 1.02, 1.02, 1.02 | 1.20, 1.20, 1.20 | 980, 1080 | 1.03, 1.03 |" \
      in table


def test_an_input_benchmarks_table_has_a_ratio_column_only_with_two_trees():
  import figure_values  # pylint: disable=import-outside-toplevel
  block = {"examples": 160, "images": 288, "s": 0.1, "cpu_s": 0.05, "shape": [8, 8, 1], "batch_size": 32,
           "unlabeled_batch_size": 128}
  one = {"trees": {"main": "/repo"}, "recipes": {"digits": {
      "main": {"examples_per_s": 1600.0, "images_per_s": 2880.0, "cpu_s": 0.05, "blocks": [block]},
      "rate_ratio": [1.0], "cpu_ratio": [1.0]}}}
  rows = figure_values.render("input_table", one, []).strip().split("\n")
  assert rows[2] == "| digits | 8x8x1 | 32 + 128 | main | 1,600 | 2,880 | 0.050 |"
  two = {"trees": {"old": "/a", "main": "/repo"}, "recipes": {"digits": dict(
      one["recipes"]["digits"], old=dict(one["recipes"]["digits"]["main"], examples_per_s=800.0),
      rate_ratio=[2.0, 1.5, 3.0], cpu_ratio=[0.5, 0.4, 0.6])}}
  rows = figure_values.render("input_table", two, []).strip().split("\n")
  assert rows[0].endswith("| main / old: examples/s, CPU s |")
  assert rows[2] == "| digits | 8x8x1 | 32 + 128 | old | 800 | 2,880 | 0.050 | |"
  assert rows[3] == "| digits | 8x8x1 | 32 + 128 | main | 1,600 | 2,880 | 0.050 | 2.000 [1.500, 3.000]; 0.500 [0.400, 0.600] |"
