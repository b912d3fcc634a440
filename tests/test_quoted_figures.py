"""The figures the training command quotes at the end of a run are the ones in the documents it names."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quoted_figures() -> dict:
  """`mpl_tf.train.QUOTED_FIGURES`, read from the source: importing the entry point would define its absl flags
  in this process, beside those of `mpl_tf.predict`, which other tests import (DuplicateFlagError)."""
  with open(os.path.join(ROOT, "mpl_tf", "train.py")) as f:
    tree = ast.parse(f.read())
  (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "QUOTED_FIGURES" for t in node.targets)]
  return ast.literal_eval(value)


def test_every_quoted_figure_is_in_the_document_it_cites():
  quoted = quoted_figures()
  assert set(quoted) == {"digits", "two_moons"}
  for split, pairs in quoted.items():
    for figure, where in pairs:
      with open(os.path.join(ROOT, where)) as f:
        text = f.read()
      numbers = re.findall(r"([+-]?\d+\.\d+)(?: \+- (\d+\.\d+))? ?(?:%|points)", figure)
      assert numbers, (split, figure)
      for mean, std in numbers:
        # A document writes 85.5 % as 85.5, 85.50 or as the fraction 0.855.
        forms = {mean, f"{float(mean):.2f}", f"{float(mean) / 100:.3f}"}
        assert any(form in text for form in forms), (split, mean, where)
        if std:  # in prose (mean +- std) or in a table's adjacent cells
          assert f"{mean} +- {std}" in text or f"{mean} | {std} |" in text, (split, mean, std, where)
