"""Every figure the documents quote, rendered from the results JSON it comes from.

  python tools/figures.py --check     # exit 1, naming each quoted figure that disagrees with its JSON
  python tools/figures.py --write     # re-render every marked figure of the documents in place

A Markdown document marks a figure with what it is, so the figure is rendered, never typed:

  <!--fig mean studies/attribution/own_data_shapes32.json mpl student/accuracy-->54.93 +- 1.53<!--/fig-->

(invisible when the Markdown is rendered). A marker's spec is `KIND JSON ARGS...`:
  mean JSON ARM METRIC            mean +- sample std over seeds, in percent ('54.93 +- 1.53')
  avg JSON ARM METRIC [DECIMALS]  the mean alone, in percent ('98.07'; 2 decimals unless given)
  fraction JSON ARM METRIC        fractions, 3 decimals, population std as TwoMoon's reports ('0.855 +- 0.003')
  fraction_mean JSON ARM METRIC   its mean alone ('0.844')
  paired JSON ARM CONTROL [METRIC]  ARM - CONTROL per seed (default: the exported student), points ('+2.07 +- 0.76')
  diff JSON ARM CONTROL [METRIC]  its mean only ('+2.07')
  better JSON ARM CONTROL [METRIC]  'better on 3 of 5 seeds'
  t JSON ARM CONTROL [METRIC]     the paired t ('t +4.73')
  counts JSON ARM CONTROL [METRIC]  seeds better / equal / worse ('3 / 0 / 0')
  seed JSON ARM METRIC INDEX      one seed's value, in percent ('97.00')
  seed_fraction JSON ARM METRIC INDEX   the same as a fraction ('0.855': TwoMoon)
  per_seed JSON ARM METRIC        every seed's value, in percent, one decimal ('97.4, 95.2, 95.2')
  cited JSON KEY                  a figure measured by others, as docs/cited_results.json quotes it
  seconds JSON                    the range of the arms' mean time a run ('134-187 s')
METRIC `selected` is the ablations' student chosen on validation (with or without finetuning), `validation` its
validation accuracy (studies/ablations/ablations.py, `scores`).
  compare_table JSON              the arms table of an `mpl-compare` report (`mpl_tf.compare.table`)
  compare_parts JSON              its table of each part against its own control, paired by seed
                                  (`compare.parts_rows`)
  results_table JSON              the table of a `tools/results_table.py` report (`runs.results_table`)
  value, ratio, range, step_table, checkpoint_table, input_table: a benchmark's figures and tables
                                  (tools/figure_values.py says how they are named)
A JSON's runs are `results[ARM]`: a list of metrics.json dicts (mpl-compare, results_table, ablations) or a dict
of per-seed lists (studies/two_moons/two_moons.py). Files that cannot hold a marker (gin headers, the training
command's end-of-run quote in mpl_tf/train.py) are listed in `QUOTES`: each spec's rendering must appear in the
file. `--check` also fails for a results JSON under studies/ that records no command regenerating it.
"""
import argparse
import json
import os
import re
import statistics
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from mpl_tf import compare, runs  # pylint: disable=wrong-import-position
import figure_values  # pylint: disable=wrong-import-position  (tools/, next to this file)

MARKER = re.compile(r"<!--fig (?P<spec>[^>]*?)-->(?P<text>.*?)<!--/fig-->", re.S)
DOCUMENTS = ("README.md", "RESULTS.md", "BENCHMARKS.md", "docs/usage.md", "docs/dtensor.md", "studies/README.md")
DIGITS = "studies/digits_results/digits_results.json"
COSINE = "studies/attribution/feedback_cosine.json"
DIGITS_NPZ = "studies/attribution/own_data_digits_npz.json"
SHAPES = "studies/attribution/own_data_shapes32.json"
TWO_MOONS = "studies/two_moons/two_moons_feedback_no_uda/two_moons.json"
TWO_MOONS_10 = "studies/two_moons/two_moons.json"
CITED = "docs/cited_results.json"
REDUCED = "studies/reduced_mpl/digits.json"
REDUCED_OFF = "studies/reduced_mpl/digits_feedback_off.json"
# Figures quoted where no marker fits: (file, spec) pairs whose rendering must appear in the file.
QUOTES = {
    "mpl_tf/train.py": [f"mean {DIGITS} supervised student/accuracy", f"mean {DIGITS} uda student/accuracy",
                        f"mean {DIGITS} mpl student/accuracy", f"paired {COSINE} mpl_uda_cos_w0.1 mpl_uda_h0 selected",
                        f"better {COSINE} mpl_uda_cos_w0.1 mpl_uda_h0 selected", f"avg {TWO_MOONS} mpl_le_mean student 1",
                        f"avg {TWO_MOONS} mpl_off student 1", f"mean {REDUCED} reduced_mpl student/accuracy",
                        f"mean {REDUCED_OFF} reduced_mpl student/accuracy"],
    # The end-of-run summary shown in a code block, where a marker would show.
    "README.md": [f"seed {DIGITS} mpl student/accuracy 0", f"seed {DIGITS} mpl student/top5_accuracy 0",
                  f"seed {DIGITS} mpl teacher/accuracy 0", f"mean {DIGITS} supervised student/accuracy",
                  f"mean {DIGITS} uda student/accuracy", f"mean {DIGITS} mpl student/accuracy",
                  f"paired {COSINE} mpl_uda_cos_w0.1 mpl_uda_h0 selected",
                  f"better {COSINE} mpl_uda_cos_w0.1 mpl_uda_h0 selected"],
    "gin/digits.gin": [f"mean {DIGITS} mpl student/accuracy", f"mean {DIGITS} mpl teacher/accuracy",
                       f"mean {DIGITS} uda student/accuracy", f"mean {DIGITS} supervised student/accuracy",
                       f"seed {DIGITS} mpl student/accuracy 0", f"seed {DIGITS} mpl teacher/accuracy 0"],
    "gin/two_moons.gin": [f"seconds {TWO_MOONS}", f"seed_fraction {TWO_MOONS} mpl_le_mean student 0",
                          f"fraction {TWO_MOONS} mpl_le_mean student", f"fraction {TWO_MOONS_10} mpl student",
                          f"fraction_mean {TWO_MOONS_10} supervised student",
                          f"fraction_mean {TWO_MOONS_10} pseudo_labels student"],
    "gin/digits_reduced_mpl.gin": [f"mean {REDUCED} reduced_mpl student/accuracy",
                                   f"per_seed {REDUCED} reduced_mpl student/accuracy",
                                   f"mean {REDUCED} reduced_mpl big_teacher/accuracy",
                                   f"mean {REDUCED} reduced_mpl teacher/accuracy",
                                   f"mean {REDUCED_OFF} reduced_mpl student/accuracy",
                                   f"per_seed {REDUCED_OFF} reduced_mpl student/accuracy"],
    "gin/cifar10_4k.gin": [f"cited {CITED} paper.cifar10_4k", f"cited {CITED} mpl_pytorch.cifar10_4k"],
    "gin/svhn_1k.gin": [f"cited {CITED} paper.svhn_1k"],
    "gin/imagenet_10pct.gin": [f"cited {CITED} paper.imagenet_10pct.top1", f"cited {CITED} paper.imagenet_10pct.top5"],
    "gin/own_data.gin": [f"mean {DIGITS_NPZ} mpl student/accuracy", f"avg {DIGITS_NPZ} mpl teacher/accuracy",
                         f"avg {DIGITS_NPZ} supervised student/accuracy", f"avg {DIGITS_NPZ} uda student/accuracy",
                         f"avg {DIGITS_NPZ} uda_distill student/accuracy",
                         f"avg {DIGITS_NPZ} mpl_feedback_off student/accuracy",
                         f"mean {SHAPES} mpl student/accuracy", f"avg {SHAPES} uda student/accuracy",
                         f"avg {SHAPES} uda_distill student/accuracy"],
}


def load(path: str) -> dict:
  with open(os.path.join(ROOT, path)) as f:
    return json.load(f)


def per_seed(results: dict, arm: str, metric: str) -> List[float]:
  """The per-seed values of `metric` for `arm` (either JSON layout; see the module doc). `selected`: the test
  accuracy of the student chosen on validation, with or without finetuning (studies/ablations/ablations.py)."""
  if arm not in results:
    raise KeyError(f"no arm {arm!r} (arms: {', '.join(results)})")
  runs_ = results[arm]
  if metric in ("selected", "validation"):
    return [float(_ablations().scores(r)[metric]) for r in runs_]
  values = [r.get(metric) for r in runs_] if isinstance(runs_, list) else runs_.get(metric)
  if values is None or any(v is None for v in values):
    raise KeyError(f"arm {arm!r} has no {metric!r} on every seed")
  return [float(v) for v in values]


def _ablations():
  """studies/ablations/ablations.py, whose `scores` picks the student on validation."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("ablations", os.path.join(ROOT, "studies", "ablations", "ablations.py"))
  if "ablations" not in sys.modules:
    sys.modules["ablations"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["ablations"])
  return sys.modules["ablations"]


def _paired(results, arm, control, metric="student/accuracy") -> dict:
  diffs = [100 * (a - b) for a, b in zip(per_seed(results, arm, metric), per_seed(results, control, metric))]
  return dict(runs.paired_stats(diffs), n=len(diffs))


def render(spec: str) -> str:
  """The text of the figure `spec` names (module doc)."""
  kind, path, *args = spec.split()
  data = load(path)
  if kind in figure_values.KINDS:
    return figure_values.render(kind, data, args)
  results = data.get("results", data)
  if kind == "mean":
    return runs.mean_std(per_seed(results, *args))
  if kind == "avg":
    arm, metric, *decimals = args
    return f"{100 * statistics.mean(per_seed(results, arm, metric)):.{int(decimals[0]) if decimals else 2}f}"
  if kind == "fraction_mean":
    return f"{statistics.mean(per_seed(results, *args)):.3f}"
  if kind == "fraction":  # TwoMoon's reports give the population std over seeds
    values = per_seed(results, *args)
    return f"{statistics.mean(values):.3f} +- {statistics.pstdev(values):.3f}"
  if kind in ("paired", "diff", "better", "t", "counts"):
    p = _paired(results, *args)
    return {"paired": f"{p['mean']:+.2f} +- {p['std']:.2f}", "diff": f"{p['mean']:+.2f}",
            "better": f"better on {p['better']} of {p['n']} seeds", "t": f"t {p['t']:+.2f}",
            "counts": f"{p['better']} / {p['equal']} / {p['worse']}"}[kind]
  if kind == "seed":
    arm, metric, index = args
    return f"{100 * per_seed(results, arm, metric)[int(index)]:.2f}"
  if kind == "per_seed":
    return ", ".join(f"{100 * v:.1f}" for v in per_seed(results, *args))
  if kind == "seed_fraction":
    arm, metric, index = args
    return f"{per_seed(results, arm, metric)[int(index)]:.3f}"
  if kind == "cited":
    return data["figures"][args[0]]
  if kind == "seconds":  # the range of the arms' mean time a run
    means = [statistics.mean(arm["seconds"]) for arm in results.values()]
    return f"{min(means):.0f}-{max(means):.0f} s"
  if kind == "compare_table":  # tables sit on lines of their own between the markers
    return "\n" + "\n".join(compare.table(results)) + "\n"
  if kind == "compare_parts":
    return "\n" + "\n".join([*compare.PARTS_HEADER, *compare.parts_rows(compare.students_of(results))]) + "\n"
  if kind == "results_table":
    return "\n" + "\n".join(runs.results_table(results)) + "\n"
  raise ValueError(f"unknown figure kind {kind!r} in {spec!r}")


def rendered(text: str) -> str:
  """`text` with every marked figure re-rendered."""
  return MARKER.sub(lambda m: f"<!--fig {m['spec']}-->{render(m['spec'])}<!--/fig-->", text)


def problems(root: str = ROOT) -> List[str]:
  """Every disagreement: a marked figure that is not its rendering, a `QUOTES` figure missing from its file, a
  results JSON under studies/ with no command."""
  out = []
  for name in DOCUMENTS:
    with open(os.path.join(root, name)) as f:
      out += marked_problems(name, f.read())
  for name, specs in QUOTES.items():
    with open(os.path.join(root, name)) as f:
      out += quoted_problems(name, f.read(), specs)
  out += [f"{path}: no command regenerates it" for path in uncommanded(root)]
  return out


def _rendering(spec: str):
  """(the rendering of `spec`, None) or (None, why it has none: a missing JSON, a key it lacks)."""
  try:
    return render(spec), None
  except (OSError, KeyError, ValueError, IndexError) as error:
    return None, f"{type(error).__name__}: {error}"


def marked_problems(name: str, text: str) -> List[str]:
  """The marked figures of document `name` that are not their rendering, or have none."""
  out = []
  for m in MARKER.finditer(text):
    value, error = _rendering(m["spec"])
    if error:
      out.append(f"{name}: '{m['spec']}' cannot be rendered ({error})")
    elif m["text"] != value:
      out.append(f"{name}: '{m['spec']}' reads {m['text']!r}, its JSON gives {value!r}")
  return out


def quoted_problems(name: str, text: str, specs) -> List[str]:
  """The figures of `specs` whose rendering does not appear in `text`, or that have none."""
  out = []
  for spec in specs:
    value, error = _rendering(spec)
    if error:
      out.append(f"{name}: '{spec}' cannot be rendered ({error})")
    elif value not in text:
      out.append(f"{name}: '{spec}' gives {value!r}, not in the file")
  return out


def uncommanded(root: str = ROOT) -> List[str]:
  """Results JSONs under studies/ that record no command: neither a top-level 'command' nor one per entry."""
  out = []
  for folder, _, files in sorted(os.walk(os.path.join(root, "studies"))):
    for name in sorted(f for f in files if f.endswith(".json")):
      path = os.path.join(folder, name)
      with open(path) as f:
        data = json.load(f)
      entries = [v for v in data.values() if isinstance(v, dict)] if isinstance(data, dict) else []
      if not (isinstance(data, dict) and data.get("command")) and not (entries and all(e.get("command")
                                                                                          for e in entries)):
        out.append(os.path.relpath(path, root))
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--check", action="store_true", help="exit 1 naming each figure that disagrees with its JSON")
  mode.add_argument("--write", action="store_true", help="re-render every marked figure of the documents in place")
  args = parser.parse_args(argv)
  if args.write:
    for name in DOCUMENTS:
      path = os.path.join(ROOT, name)
      with open(path) as f:
        text = f.read()
      if rendered(text) != text:
        with open(path, "w") as f:
          f.write(rendered(text))
        print(f"figures: rewrote {name}")
  found = problems()
  print("\n".join(found) or "figures: every quoted figure agrees with its JSON")
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
