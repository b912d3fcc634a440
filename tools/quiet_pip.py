"""`python tools/quiet_pip.py ARGS`: `python -m pip ARGS` without pip's notices about a local index's missing pages.

A pip configuration may name local package indexes (`extra-index-url = file:///opt/pypi/simple`) that hold only
some projects. For every other project pip then prints `WARNING: Location 'file:///opt/pypi/simple/tf-keras/' is
ignored: it is neither a file nor a directory.` (about 90 lines for requirements.txt), which says only that the
local index lacks that project: pip goes on to its other indexes. `make install` runs pip through this script,
which drops exactly those lines when the index's own directory exists (the project page alone is missing); a
location whose index directory is missing too (a configuration mistake), every other line and pip's exit status
pass through unchanged.
"""
import os
import re
import subprocess
import sys
from urllib.parse import unquote, urlparse

MISSING_PAGE = re.compile(r"WARNING: Location '(?P<url>file://[^']+)' is ignored: it is neither a file nor a "
                          r"directory\.")


def is_missing_project_page(line: str) -> bool:
  """Whether `line` is pip's notice about a project page missing from a local index that exists."""
  match = MISSING_PAGE.fullmatch(line.rstrip("\r\n"))
  if not match:
    return False
  page = unquote(urlparse(match.group("url")).path).rstrip("/")
  return not os.path.exists(page) and os.path.isdir(os.path.dirname(page))


def main(args) -> int:
  with subprocess.Popen([sys.executable, "-m", "pip", *args], stderr=subprocess.PIPE, text=True,
                        errors="replace") as pip:
    for line in pip.stderr:
      if not is_missing_project_page(line):
        sys.stderr.write(line)
        sys.stderr.flush()
  return pip.returncode


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
