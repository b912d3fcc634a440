"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM (how preemptible machines and schedulers stop a job) without
losing its work.

Without this, Ctrl-C raised KeyboardInterrupt wherever TensorFlow happened to be: a long traceback, and every
step since the last periodic checkpoint (up to `run.checkpoint_every`) lost; SIGTERM killed the process outright.
Inside `graceful_stop()` (the entry points use it; library calls such as `experiment.run` from a tool do not
change their signal handling) the first signal only records the request. The trainer looks at it after each
call of the train function (`steps_per_execution` steps, at most `summary_every`), saves a checkpoint of the
phase at that step (model, optimizers, data position, random generators) and raises `StopRequested`, which the
entry point reports in one line. Re-running the same command resumes at that step, on the same weights and data
position, so the finished run is the one an uninterrupted command gives (tests/test_stopping.py).

A second signal while the first is being honoured stops at once, without saving (the default behaviour).
Python runs signal handlers between bytecodes on the main thread, so a request made during a long TensorFlow
call is seen when the call returns.
"""
import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: Optional[int] = None  # the number of the first signal received inside graceful_stop()


class StopRequested(Exception):
  """Raised by the trainer at a step boundary after a stop signal, once the phase's checkpoint is saved."""

  def __init__(self, signum: int, phase: str, step: int, steps: int):
    self.signum, self.phase, self.step, self.steps = signum, phase, step, steps
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} of {steps} of phase '{phase}'; "
                     "checkpoint kept; rerun the same command to resume")

  @property
  def exit_status(self) -> int:
    """128 + the signal number, as a shell reports a process the signal stopped (130 for SIGINT, 143 SIGTERM)."""
    return 128 + self.signum


def requested() -> Optional[int]:
  """The signal number of a pending stop request, or None."""
  return _requested


def _handle(signum, frame):
  del frame
  global _requested
  if _requested is not None:  # the second signal: stop now, as if nothing were installed
    _restore_defaults()
    if signum == signal.SIGINT:
      raise KeyboardInterrupt
    raise SystemExit(128 + signum)
  _requested = signum
  print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next step boundary, then "
        "stopping (send it again to stop at once, without saving)", file=sys.stderr, flush=True)


_previous = {}


def _restore_defaults():
  for signum, handler in _previous.items():
    signal.signal(signum, handler)
  _previous.clear()


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
  """Turns SIGINT and SIGTERM into a stop request for the trainer while the block runs (main thread only;
  elsewhere, where Python cannot install handlers, it changes nothing)."""
  global _requested
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _requested = None
  for signum in _SIGNALS:
    _previous[signum] = signal.signal(signum, _handle)
  try:
    yield
  finally:
    _restore_defaults()
    _requested = None
