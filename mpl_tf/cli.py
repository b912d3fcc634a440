"""What the command-line entry points share: a failure is one line on stderr and a non-zero exit.

A user's mistake (a bad binding, a missing file, a wrong image shape, a NaN loss) is reported as
`<command>: <what is wrong>` with exit status 1, not as a traceback: the message names the problem, the trace
would only bury it. Set `MPL_TF_TRACEBACK=1` to get the full traceback of such a failure (for a bug report).
Failures that are not a user's mistake (anything else) keep their traceback.
"""
import functools
import os
import sys
from typing import Callable

import tensorflow as tf

# The exception types through which the library reports bad input (see docs/errors.md).
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, NotImplementedError, FloatingPointError,
               tf.errors.InvalidArgumentError, tf.errors.NotFoundError)


def one_line(error: BaseException) -> str:
  """The error's message on one line, without the 'In call to configurable' lines gin appends."""
  lines = [line.strip() for line in str(error).splitlines()
           if line.strip() and not line.strip().startswith("In call to configurable")]
  message = " ".join(lines) or type(error).__name__
  return message.strip("'\"") if isinstance(error, KeyError) else message


def reports_errors(program: str) -> Callable:
  """Decorates an absl `main(argv)`: a user error exits with `program: message` (one line) and status 1."""

  def decorate(main: Callable) -> Callable:
    @functools.wraps(main)
    def wrapped(argv):
      try:
        return main(argv)
      except USER_ERRORS as e:
        if os.environ.get("MPL_TF_TRACEBACK"):
          raise
        print(f"{program}: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

    return wrapped

  return decorate
