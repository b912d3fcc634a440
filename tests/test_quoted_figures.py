"""The figures the training command quotes at the end of a run are the ones in the documents it names."""
import os
import re

from mpl_tf import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_quoted_figure_is_in_the_document_it_cites():
  for split, (figure, where) in train.QUOTED_SUPERVISED.items():
    with open(os.path.join(ROOT, where)) as f:
      text = f.read()
    numbers = re.findall(r"(\d+\.\d+)(?: \+- (\d+\.\d+))? ?%", figure)
    assert numbers, split
    for mean, std in numbers:
      # A document writes 85.5 % as 85.5, 85.50 or as the fraction 0.855.
      forms = {mean, f"{float(mean):.2f}", f"{float(mean) / 100:.3f}"}
      assert any(form in text for form in forms), (split, mean, where)
      if std:
        assert f"{mean} +- {std}" in text, (split, mean, std, where)
