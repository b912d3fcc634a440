"""What a run prints while it trains: one progress line across all its phases, and the held-out accuracies.

Keras' progress bar showed one phase at a time (its ETA was the first phase's: "ETA 24:36" of a run three times
as long), and wrote its `\\b` / `\\r` redraws into redirected logs (it treats every POSIX system as a terminal).
Here a run knows its phases and their steps up front (`RunProgress(phases)`):
- on a terminal, one line redrawn in place: the phase, its step, the shown metrics, the whole run's percentage and
  an ETA for the rest of the run (all phases, from the pace of the steps this process has trained);
- elsewhere (a log file, a pipe), plain lines, about ten a phase, with the same content;
- at each `eval_every`, one line with the student's and the teacher's held-out accuracy (`evaluation`).
`offset(phase)` is the number of steps of the phases before it, so TensorBoard's steps continue across phases
instead of restarting at 0 (the trainer adds it to every summary).
"""
import sys
import time
from typing import Dict, Optional, Sequence, TextIO, Tuple

# The metrics worth a place on the progress line (all of them go to TensorBoard).
SHOWN = ("teacher/loss", "student/loss", "mpl/h", "uda/mask_ratio", "student/train_accuracy")


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunProgress:
  """Progress of a run's phases, `phases`: (name, steps) in training order."""

  def __init__(self, phases: Sequence[Tuple[str, int]], stream: Optional[TextIO] = None,
               interactive: Optional[bool] = None):
    self.phases = list(phases)
    self.total = sum(steps for _, steps in self.phases)
    self.stream = stream or sys.stdout
    self.interactive = self.stream.isatty() if interactive is None else interactive
    self._start: Optional[Tuple[float, int]] = None  # (time, run step) when this process began training
    self._last_plain: Dict[str, int] = {}
    self._open_line = False

  def offset(self, phase: str) -> int:
    """Steps of the phases before `phase` (its TensorBoard steps start after them)."""
    done = 0
    for name, steps in self.phases:
      if name == phase:
        return done
      done += steps
    raise KeyError(f"unknown phase {phase!r}; the run's phases: {[name for name, _ in self.phases]}")

  def _steps(self, phase: str) -> int:
    return dict(self.phases)[phase]

  def start_phase(self, phase: str, step: int) -> None:
    self._end_line()
    resumed = " (resumed)" if step else ""
    self._write(f"[{phase}] step {step} of {self._steps(phase)}{resumed}\n")
    self._last_plain[phase] = step // max(1, self._steps(phase) // 10)
    if self._start is None:
      self._start = (time.monotonic(), self.offset(phase) + step)

  def update(self, phase: str, step: int, logs: Dict[str, float]) -> None:
    """After a train-function call: the line, redrawn on a terminal, else printed every ~10 % of the phase."""
    steps = self._steps(phase)
    if not self.interactive:
      every = max(1, steps // 10)
      if step // every == self._last_plain.get(phase, -1) and step < steps:
        return
      self._last_plain[phase] = step // every
    shown = "  ".join(f"{name} {logs[name]:.4g}" for name in SHOWN if name in logs)
    line = f"[{phase}] {step}/{steps}  {shown}  | run {100 * (self.offset(phase) + step) / self.total:.0f} %"
    eta = self._eta(self.offset(phase) + step)
    if eta is not None and self.offset(phase) + step < self.total:
      line += f", ETA {_clock(eta)}"
    if self.interactive:
      self._write("\r" + line + "\033[K")
      self._open_line = True
      if step >= steps:
        self._end_line()
    else:
      self._write(line + "\n")

  def evaluation(self, phase: str, step: int, name: str, results: Dict[str, float]) -> None:
    """One line with the held-out accuracies (`name`: test or validation) of the student and the teacher."""
    parts = [f"{who} {100 * results[f'{who}/accuracy']:.2f} %" for who in ("student", "teacher")
             if f"{who}/accuracy" in results]
    if not parts:
      return
    self._end_line()
    self._write(f"[{phase}] step {step}: {name} accuracy: {', '.join(parts)}\n")

  def _eta(self, run_step: int) -> Optional[float]:
    if self._start is None:
      return None
    started, first = self._start
    done = run_step - first
    if done <= 0:
      return None
    return (time.monotonic() - started) / done * (self.total - run_step)

  def _end_line(self) -> None:
    if self._open_line:
      self._write("\n")
      self._open_line = False

  def _write(self, text: str) -> None:
    self.stream.write(text)
    self.stream.flush()
