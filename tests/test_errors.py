"""Every bad input in docs/errors.md still fails with one line naming the problem and a non-zero exit, and the
table there is what the commands print today (`tools/bad_inputs.py --check`)."""
import subprocess
import sys

from tests.conftest import ROOT


def test_every_bad_input_fails_with_one_line_as_docs_errors_md_says():
  proc = subprocess.run([sys.executable, "tools/bad_inputs.py", "--check=docs/errors.md"], cwd=ROOT,
                        capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
