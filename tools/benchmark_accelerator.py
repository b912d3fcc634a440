"""Accelerator figures in one command: the MPL step in three precisions with XLA off and on, and a real run.

  python tools/benchmark_accelerator.py --out_dir=/tmp/accel            # on a machine with a GPU (or TPU)
  python tools/benchmark_accelerator.py --out_dir=/tmp/accel --quick    # checks the tool itself, any CPU

1. `tools/benchmark_step.py` (WRN-28-2, 32x32, B = 16, U = 112 in two views) once per precision (float32,
   mixed_bfloat16, mixed_float16), each with XLA off and on, in a process of its own: images/s of every MPL
   variant (hard / soft labels, UDA, and teacher_activations='recompute') and of the supervised step, MPL / supervised step-time ratios, and each step's peak device memory
   (the allocator's, GPU:0 when there is one).
2. `gin/cifar10_4k.gin` (WRN-28-2, MPL + UDA, the paper's batch sizes) for 2,000 steps on generated data of
   CIFAR-10's shape (an .npz of random 32x32x3 images, 10 classes: nothing to download), through `mpl_tf.train`:
   wall time, MPL steps/s and images/s, and the process's peak device memory.

Writes `<out_dir>/accelerator.json` and `<out_dir>/accelerator.md` (the tables for BENCHMARKS.md, with the
device's name). The run squeezes the recipe's warmup and student wait into the first 5% of its steps: it
measures throughput and memory, not accuracy. `--quick` shrinks everything (16x16 step benchmark with XLA off
and two MPL variants, 20 steps of the run at gin/smoke.gin's batch sizes) so that the whole path runs on a CPU
in about 6 minutes (tests/tools/test_benchmark_accelerator.py, slow).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The run reports its own peak device memory: mpl_tf.train with a hook that prints it at exit.
RUN_WITH_PEAK = """
import atexit, json, sys
import tensorflow as tf
def _peak():
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:
    print("PEAK_MIB " + json.dumps(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20), flush=True)
atexit.register(_peak)
from absl import app
from mpl_tf import train
app.run(train.main)
"""


def define_flags():
  flags.DEFINE_string("out_dir", None, "where accelerator.json and accelerator.md go", required=True)
  flags.DEFINE_bool("quick", False, "tiny settings that check the tool on any CPU in minutes")
  flags.DEFINE_integer("run_steps", 2000, "MPL steps of the gin/cifar10_4k.gin run on generated data")
  flags.DEFINE_list("precisions", list(PRECISIONS), "precisions of the step benchmark")


def _step_benchmarks(out_dir, quick, precisions):
  results = {}
  for precision in precisions:
    path = os.path.join(out_dir, f"step_{precision}.json")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "benchmark_step.py"), f"--precision={precision}",
           f"--output={path}", "--memory=allocator"]  # the device's allocator: what a batch size must fit in
    # With and without teacher_activations='recompute': on a device, memory is what decides the batch size.
    cmd += (["--quick", "--jit=off", "--variants=hard+uda,hard+uda+recompute"] if quick else
            ["--jit=both", "--variants=hard,hard+uda,soft,soft+uda,hard+uda+recompute,soft+uda+recompute"])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      results[precision] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
      continue
    with open(path) as f:
      report = json.load(f)
    cases = {}
    supervised = {}
    for name, case in report["cases"].items():
      median = sorted(case["all_s"])[len(case["all_s"]) // 2]
      cases[name] = {"images_per_s": report["images_per_step"] / median, "step_s": median,
                     "peak_mib": case["peak_mib"]}
      if name.startswith("supervised"):
        supervised[name.endswith(" jit")] = median
    for name, case in cases.items():
      if name.startswith("mpl/"):
        case["mpl_over_supervised"] = case["step_s"] / supervised[name.endswith(" jit")]
    results[precision] = {"devices": report.get("devices"), "cases": cases}
  return results


def _cifar_shaped_npz(path, quick):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n_train, n_test = (600, 100) if quick else (50_000, 10_000)
  np.savez(path, x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
           y_train=np.arange(n_train) % 10, x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
           y_test=np.arange(n_test) % 10)


def _cifar_run(out_dir, quick, steps):
  data = os.path.join(out_dir, "cifar_shaped.npz")
  _cifar_shaped_npz(data, quick)
  workdir = tempfile.mkdtemp(prefix="cifar_shaped_", dir=out_dir)
  # The recipe's schedule squeezed into `steps` (warmup and the student's wait of 5,000 / 3,000 steps would not
  # fit): a throughput and memory run, not an accuracy run.
  short = max(1, steps // 20)
  bindings = ["build_dataset.name = 'npz'", f"build_dataset.path = '{data}'", f"run.steps = {steps}",
              "run.finetune_steps = 0", "run.export = False", "run.eval_every = 0", "run.verbose = 0",
              f"run.checkpoint_every = {steps}", "build_dataset.num_validation = 0",
              f"teacher/optimizer.warmup_steps = {short}", f"student/optimizer.warmup_steps = {short}",
              f"mpl.student_wait_steps = {short}",
              "build_dataset.num_labeled = 4000" if not quick else "build_dataset.num_labeled = 100"]
  files = ["gin/cifar10_4k.gin"] + (["gin/smoke.gin"] if quick else [])  # smoke: batch 4, 2x unlabeled
  cmd = [sys.executable, "-c", RUN_WITH_PEAK, f"--workdir={workdir}"] + [f"--gin_file={f}" for f in files]
  cmd += [f"--gin_bindings={b}" for b in bindings]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if proc.returncode != 0:
    return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
  with open(os.path.join(workdir, "operative_config.gin")) as f:
    config = f.read()
  batch = int(config.split("build_dataset.batch_size = ")[1].split()[0])
  ratio = int(config.split("build_dataset.uda_ratio = ")[1].split()[0])
  images = batch * (1 + 2 * ratio)  # labeled + two views of the unlabeled batch
  peak = [json.loads(l.split(" ", 1)[1]) for l in proc.stdout.splitlines() if l.startswith("PEAK_MIB ")]
  return {"steps": steps, "wall_s": seconds, "steps_per_s": steps / seconds, "images_per_s": steps * images / seconds,
          "images_per_step": images, "peak_device_mib": peak[0] if peak else None,
          "note": "wall time includes start-up, data building and tracing"}


def render(report) -> str:
  lines = [f"Device: {report['device']}; TensorFlow {report['tensorflow']}; command: `{report['command']}`", "",
           "| precision | case | images/s | step time (ms) | MPL / supervised | peak MiB |",
           "| --- | --- | --- | --- | --- | --- |"]
  for precision, result in report["steps"].items():
    if "error" in result:
      lines.append(f"| {precision} | failed: {result['error']} | | | | |")
      continue
    for name, case in result["cases"].items():
      if name.startswith("part/"):
        continue
      ratio = f"{case['mpl_over_supervised']:.2f}" if "mpl_over_supervised" in case else "-"
      lines.append(f"| {precision} | {name} | {case['images_per_s']:.0f} | {1000 * case['step_s']:.1f} | {ratio} "
                   f"| {case['peak_mib']:.0f} |")
  run = report["run"]
  lines += ["", "gin/cifar10_4k.gin on generated CIFAR-shaped data:"]
  if "error" in run:
    lines.append(f"failed: {run['error']}")
  else:
    peak = "n/a (no GPU)" if run["peak_device_mib"] is None else f"{run['peak_device_mib']:.0f} MiB"
    lines.append(f"{run['steps']} MPL steps in {run['wall_s']:.0f} s ({run['steps_per_s']:.2f} steps/s, "
                 f"{run['images_per_s']:.0f} images/s, {run['images_per_step']} images a step, {run['note']}); "
                 f"peak device memory {peak}")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  accelerators = [d for d in tf.config.list_physical_devices() if d.device_type in ("GPU", "TPU")]
  details = [tf.config.experimental.get_device_details(d).get("device_name", d.name) for d in accelerators]
  report = {"command": "python tools/benchmark_accelerator.py " + " ".join(sys.argv[1:]),
            "device": ", ".join(details) or "CPU only (no accelerator figure)", "tensorflow": tf.__version__,
            "steps": _step_benchmarks(FLAGS.out_dir, FLAGS.quick, FLAGS.precisions),
            "run": _cifar_run(FLAGS.out_dir, FLAGS.quick, 20 if FLAGS.quick else FLAGS.run_steps)}
  with open(os.path.join(FLAGS.out_dir, "accelerator.json"), "w") as f:
    json.dump(report, f, indent=2)
  text = render(report)
  with open(os.path.join(FLAGS.out_dir, "accelerator.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
