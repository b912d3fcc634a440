"""`--help` of the entry points (mpl-train, mpl-evaluate, mpl-predict), answered before TensorFlow loads.

absl's own `--help` printed only "USAGE ... Try --helpfull" for a console script (our flags are not the script
module's), after TensorFlow's 15-second import, and exited with status 1; `--helpfull` buried our few flags among
~130 of TensorFlow's. So each entry point defines its flags before it imports TensorFlow and calls `exit_on_help`:
when it runs as the program and `-h` / `--help` / `--helpshort` is on the command line, it prints the module's
summary, its own flags with their help strings and defaults, and a pointer for more, then exits 0. `--helpfull`
still reaches absl (every flag, TensorFlow's included).
"""
import os
import sys
import textwrap
from typing import Sequence

from absl import flags

HELP_ARGUMENTS = ("-h", "--help", "--helpshort", "-?")


def _runs_as_program(module_name: str, script: str) -> bool:
  """Whether this process runs the entry point: `python -m mpl_tf.x` (`__main__`) or its console script."""
  return module_name == "__main__" or os.path.basename(sys.argv[0]) == script


def help_text(script: str, doc: str, names: Sequence[str], more: str = "") -> str:
  """The module docstring's first paragraph, each flag of `names` with its help and default, and `more`."""
  summary = doc.strip().split("\n\n")[0]
  lines = [f"{script}: {summary}", "", "flags:"]
  for name in names:
    flag = flags.FLAGS[name]
    default = "" if flag.default in (None, [], "") else f" (default: {flag.default_as_str})"
    lines.append(f"  --{name}")
    lines += textwrap.wrap(" ".join(flag.help.split()) + default, width=100, initial_indent="      ", subsequent_indent="      ")
  lines += ["", "  --helpfull   every flag, TensorFlow's included"]
  if more:
    lines += [""] + textwrap.wrap(more, width=104)
  return "\n".join(lines)


def exit_on_help(module_name: str, script: str, doc: str, names: Sequence[str], more: str = "") -> None:
  """Prints `help_text` and exits 0 when the program was asked for help; otherwise does nothing."""
  if _runs_as_program(module_name, script) and any(arg in HELP_ARGUMENTS for arg in sys.argv[1:]):
    print(help_text(script, doc, names, more), flush=True)
    raise SystemExit(0)
