"""The tables of a `tools/benchmark_dtensor.py` run, from its report (also its saved JSON: tools/figures.py
renders docs/dtensor.md's tables from it). Kept apart from the benchmark so that reading a table needs no
TensorFlow."""
from typing import List


def step_table(report) -> List[str]:
  """Step times per mesh: first call (tracing + DTensor compilation), median step, and the median against the
  single-device step of the same run."""
  args, rows = report["args"], report["rows"]
  single = next((r["step_ms"] for r in rows if r["mesh"] == "single"), None)
  shape = f"{args['image_size']}x{args['image_size']}x{args['channels']}"
  lines = [f"MPL step, {args['model']} {shape}, {args['batch']} labeled + 2 x {args['batch'] * args['uda_ratio']} "
           f"unlabeled, float32; CPU cores: {report.get('cpus', '?')}, shared by all virtual devices", "",
           "| mesh (batch x model) | devices | first call (trace) s | step ms (median) | vs single |",
           "| --- | --- | --- | --- | --- |"]
  for r in rows:
    ratio = f"{r['step_ms'] / single:.2f}x" if single else "-"
    lines.append(f"| {r['mesh']} | {r['devices']} | {r['trace_s']} | {r['step_ms']} | {ratio} |")
  return lines


def memory_table(report) -> List[str]:
  """Per-device MiB of the MPL state from the DVariables' local shards, per model and number of model shards,
  with the process's RSS growth over the layouts' figure x shards (about 1 when each device holds its shard)."""
  rows = report["rows"]
  lines = ["| model | model shards | teacher | student | EMA student | optimizer slots | total | vs 1 shard | "
           "RSS / layouts |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    base = next(x["total"] for x in rows if x["model"] == r["model"] and x["model_shards"] == 1)
    lines.append(f"| {r['model']} | {r['model_shards']} | {r['teacher']:.1f} | {r['student']:.1f} | {r['ema']:.1f} | "
                 f"{r['optimizers']:.1f} | {r['total']:.1f} | {r['total'] / base:.2f} | {r['rss_vs_layouts']:.2f} |")
  return lines
