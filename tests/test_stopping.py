"""`mpl_tf.stopping`: a stop signal is a request the trainer honours at a step boundary; a second one stops at once.

The end-to-end check (a run stopped by SIGINT, then by SIGTERM, resumes to the uninterrupted run bit for bit) is in
tests/test_reproducible_runs.py, beside the SIGKILL one.
"""
import os
import signal

import pytest

from mpl_tf import stopping


def test_a_signal_inside_graceful_stop_is_recorded_not_raised_and_the_handlers_are_restored():
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with stopping.graceful_stop():
    assert stopping.requested() is None
    os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next line
    assert stopping.requested() == signal.SIGINT
  assert stopping.requested() is None
  assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_signal_stops_at_once():
  with pytest.raises(SystemExit) as stopped:
    with stopping.graceful_stop():
      os.kill(os.getpid(), signal.SIGTERM)
      os.kill(os.getpid(), signal.SIGTERM)
  assert stopped.value.code == 143


def test_the_message_names_the_signal_the_step_and_the_phase_and_the_status_is_the_shells():
  stop = stopping.StopRequested(signal.SIGTERM, "distill", 700, 2000)
  assert str(stop) == ("stopped by SIGTERM at step 700 of 2000 of phase 'distill'; checkpoint kept; rerun the same "
                       "command to resume")
  assert stop.exit_status == 143 and stopping.StopRequested(signal.SIGINT, "mpl", 1, 2).exit_status == 130


def test_outside_graceful_stop_nothing_is_requested():
  """Tools that call experiment.run in-process keep their own signal handling."""
  # Not `default_int_handler`: a suite started in the background (`&`, nohup) has SIGINT ignored throughout.
  assert stopping.requested() is None
  assert all(signal.getsignal(s) is not stopping._handle for s in (signal.SIGINT, signal.SIGTERM))  # pylint: disable=protected-access
