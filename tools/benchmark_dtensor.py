"""MPL step time and per-device memory on DTensor meshes of virtual CPU devices, next to the single-device run.

  python tools/benchmark_dtensor.py                       # step times, cnn_small on 8x8 digits-sized inputs
  python tools/benchmark_dtensor.py --model wrn28_2 --image_size 32 --batch 8
  python tools/benchmark_dtensor.py --memory              # per-device bytes, WRN-28-2 and ResNet-50, 1/2/4 shards

Step time: one MPL step (teacher with UDA on labeled + two unlabeled views, student update, feedback, EMA) of
the same model and data on: `single` (no DTensor: today's path), and DTensor meshes `BxM` (batch x model) of
1, 2 and 4 virtual CPU devices. Virtual devices share this machine's cores, so the figures measure the
overhead of the DTensor path (SPMD expansion, per-device kernels, collectives between virtual devices), not
a speed-up. Trace is the first call (tracing + DTensor compilation); step is the median of the timed calls.

Memory (`--memory`): bytes on each device of teacher + student + EMA student + both optimizers' slots (SGD
momentum) + the optimizers' own variables, computed from each DVariable's layout (the size of its local
shard). The batch dimension does not change it; meshes are 1 x model. Cross-check with real memory: virtual
CPU devices share one process (and one allocator: TF's BFC CPU allocator, which would count bytes, fails on
DTensor's variable initialisation), so no per-device figure can be read, but the process's resident memory
grows, over all devices, by the layout figure x the number of devices if each device holds only its shard, and
by `model` times more if the shards were full copies; the `RSS / layouts` column is that ratio (above 1: the
single-device networks built first and copied in, traced functions, allocator slack).
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from mpl_tf import layout  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dtensor_tables  # pylint: disable=wrong-import-position  (tools/, next to this file)

MESHES = ("single", "1x1", "2x1", "1x2", "4x1", "2x2", "1x4")


def parse_mesh(name):
  if name == "single":
    return None
  batch, model = (int(v) for v in name.split("x"))
  return layout.create_mesh(batch=batch, model=model, device_type="CPU")


def build_model(mesh, name, num_classes, shape, seed=0):
  """The compiled MPL model (UDA teacher, EMA student, SGD momentum) with its networks placed on `mesh`, built
  by the library's own `experiment.network` / `experiment.optimizer` on that (activated) mesh."""
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.uda import UDASettings  # pylint: disable=import-outside-toplevel
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  options = {"bn_fused": False}  # the same network on every mesh (placed networks use unfused batch norm)
  if builder.model_family(name) in ("wide_resnet", "cnn"):
    options.update(dropout=0.0)
  layout.activate(mesh)
  try:
    nets = [experiment.network(num_classes, shape, seed=seed, name=name, **options) for _ in range(2)]
    model = MetaPseudoLabelsModel(teacher=nets[0], student=nets[1], uda=UDASettings(weight=1.0), ema_decay=0.99,
                                  seed=seed)
    sgd = [experiment.optimizer(total_steps=1, learning_rate=0.01, momentum=0.9, nesterov=True) for _ in range(2)]
  finally:
    layout.activate(None)
  model.compile(teacher_optimizer=sgd[0], student_optimizer=sgd[1])
  return model


def step_times(args):
  shape = (args.image_size, args.image_size, args.channels)
  rng = np.random.default_rng(0)
  u = args.batch * args.uda_ratio
  element = ((rng.uniform(size=(args.batch,) + shape).astype(np.float32),
              rng.integers(0, args.num_classes, args.batch).astype(np.int32)),
             (rng.uniform(size=(u,) + shape).astype(np.float32), rng.uniform(size=(u,) + shape).astype(np.float32)))
  dataset = tf.data.Dataset.from_tensors(element).repeat()
  rows = []
  for name in args.meshes.split(","):
    mesh = parse_mesh(name)
    model = build_model(mesh, args.model, args.num_classes, shape)
    iterator = layout.iterator(dataset, mesh)
    train_function = model.make_train_function()
    start = time.perf_counter()
    logs = train_function(iterator)
    float(layout.to_host(logs["teacher/loss"]))
    trace = time.perf_counter() - start
    for _ in range(args.warmup):
      float(layout.to_host(train_function(iterator)["teacher/loss"]))
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      float(layout.to_host(train_function(iterator)["teacher/loss"]))
      times.append(time.perf_counter() - start)
    devices = 1 if mesh is None else mesh.num_local_devices()
    rows.append({"mesh": name, "devices": devices, "trace_s": round(trace, 1),
                 "step_ms": round(1000 * statistics.median(times), 1),
                 "min_ms": round(1000 * min(times), 1)})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def resident_bytes() -> int:
  """The process's resident set size (Linux /proc), in bytes."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def memory_case(name: str, shards: int) -> dict:
  """Per-device bytes of one model on a 1 x `shards` mesh, and the process's RSS growth while building it."""
  shape, classes = {"wrn28_2": ((32, 32, 3), 10), "resnet50": ((224, 224, 3), 1000)}[name]
  mesh = layout.create_mesh(batch=1, model=shards, device_type="CPU")
  gc.collect()
  rss_before = resident_bytes()
  model = build_model(mesh, name, classes, shape)
  for opt, net in ((model.teacher_optimizer, model.teacher), (model.student_optimizer, model.student)):
    opt.build(net.trainable_variables)
  gc.collect()
  rss = resident_bytes() - rss_before
  parts = {
      "teacher": layout.per_device_bytes(model.teacher.variables),
      "student": layout.per_device_bytes(model.student.variables),
      "ema": layout.per_device_bytes(model.ema_student.variables),
      "optimizers": layout.per_device_bytes(model.teacher_optimizer.variables + model.student_optimizer.variables),
  }
  parts["total"] = sum(parts.values())
  return {"model": name, "model_shards": shards, **{k: v / 2**20 for k, v in parts.items()},
          "rss_vs_layouts": rss / (parts["total"] * shards)}


def memory(args):
  """One fresh process per (model, shards), so that the RSS growth is that case's alone."""
  rows = []
  for name in args.memory_models.split(","):
    for shards in (1, 2, 4):
      proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory_case", f"{name}:{shards}",
                             "--devices", str(args.devices)], capture_output=True, text=True, check=True)
      rows.append(json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1]))
      print(json.dumps(rows[-1]), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="cnn_small", help="network name (mpl_tf.models.builder)")
  parser.add_argument("--image_size", type=int, default=8)
  parser.add_argument("--channels", type=int, default=1)
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch", type=int, default=16, help="labeled batch (divisible by 4)")
  parser.add_argument("--uda_ratio", type=int, default=2, help="unlabeled batch = ratio x batch, two views")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per mesh")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first call")
  parser.add_argument("--meshes", default=",".join(MESHES), help="'single' and/or BxM meshes")
  parser.add_argument("--devices", type=int, default=4, help="virtual CPU devices")
  parser.add_argument("--memory", action="store_true", help="per-device memory table instead of step times")
  parser.add_argument("--memory_models", default="wrn28_2,resnet50")
  parser.add_argument("--memory_case", default=None, help="internal: MODEL:SHARDS, one row of --memory")
  parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
  args = parser.parse_args()
  layout.initialize("CPU", virtual_devices=args.devices)
  if args.memory_case:
    name, shards = args.memory_case.split(":")
    print(json.dumps(memory_case(name, int(shards))))
    return
  report = {"command": "python tools/benchmark_dtensor.py " + " ".join(sys.argv[1:]), "args": vars(args),
            "cpus": len(os.sched_getaffinity(0)), "rows": memory(args) if args.memory else step_times(args)}
  print("\n" + "\n".join(dtensor_tables.memory_table(report) if args.memory else dtensor_tables.step_table(report)))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  main()
