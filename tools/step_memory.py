"""The peak memory of one `tools/benchmark_step.py` case, each measured alone in a fresh process.

Why a fresh process per case: freed memory is not given back to the system at once (glibc keeps freed pages in its
heaps and arenas, TensorFlow's BFC allocator keeps its regions), so in a process that has already run a step, the
next step's RSS grows only by what the heap did not keep from before. Measured in one process after the timing
rounds, the cases that run last, or a case after its own warm-up, read near zero and the ratios mean nothing.

Two views, each from its own child process (`benchmark_step.py` with the hidden `--isolated_*` flags):
  rss        the process's peak resident memory (VmHWM) during warm-up + 1 steps, minus its RSS once the case is
             built and its function traced (the graph exists, nothing has run yet): everything running the step
             takes, TensorFlow's tensors, oneDNN's scratch space, the allocator's fragmentation, and the
             first-execution costs (graph optimisation, kernel caches). TensorFlow's default CPU allocator.
  allocator  TensorFlow's allocator: the peak during one step after the warm-up minus what was allocated before
             it (activations, gradients, temporaries; not weights or optimizer slots). On a CPU the child sets
             TF_CPU_ALLOCATOR_USE_BFC=true, without which the CPU allocator keeps no statistics; on a machine
             with a GPU it is GPU:0's allocator.
"""
import json
import os
import re
import subprocess
import sys
from typing import Callable, List

VIEWS = ("allocator", "rss")
_PREFIX = "ISOLATED_MEMORY "


def vm_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def reset_peak_rss() -> None:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)


def measure_here(tf, step: Callable[[], object], trace: Callable[[], object], warmup: int, view: str) -> float:
  """MiB, in this (fresh) process, of `view` for `step` (module docstring); `trace` builds its graph first."""
  trace()
  if view == "rss":
    before = vm_kib("VmRSS")
    reset_peak_rss()
    for _ in range(warmup + 1):
      step()
    return (vm_kib("VmHWM") - before) / 1024
  for _ in range(warmup):
    step()
  device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
  tf.config.experimental.reset_memory_stats(device)
  before = tf.config.experimental.get_memory_info(device)["current"]
  step()
  return (tf.config.experimental.get_memory_info(device)["peak"] - before) / 2**20


def report_here(value: float) -> None:
  """The child's answer, on the last line of its stdout."""
  print(_PREFIX + json.dumps(value), flush=True)


def measure(script: str, argv: List[str], case: str, jit: bool, view: str) -> float:
  """Runs `script argv --isolated_case=case ...` in a fresh Python and returns its figure in MiB."""
  env = dict(os.environ)
  if view == "allocator":
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
  else:
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
  cmd = [sys.executable, script, *argv, f"--isolated_case={case}", f"--isolated_jit={int(jit)}",
         f"--isolated_view={view}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith(_PREFIX)]
  if proc.returncode != 0 or not lines:
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise RuntimeError(f"memory of {case!r} ({view}) failed with exit status {proc.returncode}:\n{tail}")
  return json.loads(lines[-1][len(_PREFIX):])


def child_argv(argv: List[str]) -> List[str]:
  """The parent's settings for a child: everything but the parent-only flags (output, memory, jit, steps)."""
  drop = ("--output", "--memory", "--jit", "--steps", "--from_json")
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in drop:
      skip = "=" not in arg
      continue
    kept.append(arg)
  return kept
