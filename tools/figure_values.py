"""Figure kinds for results that are not per-seed runs: the benchmarks' JSON (tools/figures.py renders with these).

A benchmark writes one JSON of its own shape (`tools/benchmark_step.py`, `checkpoint_sizes.py`,
`benchmark_input.py`, `benchmark_folder_source.py`), so BENCHMARKS.md names a figure by where it sits in that
JSON, or asks for the tool's own table:
  command JSON                      the command that wrote the JSON, as code
  value JSON PATH [FORMAT]          the value at PATH, formatted with FORMAT (a Python format spec, default '.2f')
  ratio JSON PATH PATH [FORMAT]     the first value over the second
  range JSON FORMAT PATH PATH...    the smallest and the largest of the values, 'low-high' (the same when equal)
  step_table JSON                   the tables of a benchmark_step run (`step_tables.render`)
  checkpoint_table JSON             the table of a checkpoint_sizes run (`checkpoint_sizes.table`)
  input_table JSON                  the --input_only table of a benchmark_input run (`benchmark_input.recipes_table`)
  dtensor_step_table JSON           a benchmark_dtensor run's step times (`dtensor_tables.step_table`)
  dtensor_memory_table JSON         a benchmark_dtensor --memory run's per-device bytes (`dtensor_tables.memory_table`)
PATH is the keys from the top, joined by '.'; a list takes an index; '%20' stands for a space in a key (a spec is
split at spaces: `cases.mpl/hard%20jit.allocator_mib`). A benchmark_step JSON first gets the figures its tables
derive (`step_tables.render` adds each case's median seconds under `medians` and each variant's ratios under
`mpl`), so a ratio quoted in the text is the table's: `value studies/benchmarks/step.json
mpl.mpl/hard.ratio_to_parts.cpu`.
"""
import os
import sys
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_tables  # pylint: disable=wrong-import-position  (tools/, next to this file)

KINDS = ("command", "value", "ratio", "range", "step_table", "checkpoint_table", "input_table", "dtensor_step_table",
         "dtensor_memory_table")


def with_derived(data):
  """`data` with what its tool's tables derive from it (a benchmark_step run: the ratios under `mpl`)."""
  if isinstance(data, dict) and "cases" in data and "images_per_step" in data and "medians" not in data:
    step_tables.render(data)
  return data


def at(data, path: str):
  """The value at dotted `path` in `data`; a KeyError that names the first missing key."""
  value = data
  for key in (part.replace("%20", " ") for part in path.split(".")):
    if isinstance(value, list):
      value = value[int(key)]
    elif isinstance(value, dict) and key in value:
      value = value[key]
    else:
      options = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
      raise KeyError(f"{path!r}: no {key!r} (there: {options})")
  return value


def render(kind: str, data, args: List[str]) -> str:
  """The text of a figure of one of `KINDS` from the loaded JSON `data`."""
  data = with_derived(data)
  if kind == "command":
    return f"`{data['command']}`"
  if kind == "value":
    path, *fmt = args
    return format(at(data, path), fmt[0] if fmt else ".2f")
  if kind == "ratio":
    top, bottom, *fmt = args
    return format(at(data, top) / at(data, bottom), fmt[0] if fmt else ".2f")
  if kind == "range":
    fmt, *paths = args
    low, high = (format(f(at(data, p) for p in paths), fmt) for f in (min, max))
    return low if low == high else f"{low}-{high}"
  if kind == "step_table":
    return "\n" + step_tables.render(data).strip() + "\n"
  if kind == "checkpoint_table":
    import checkpoint_sizes  # pylint: disable=import-outside-toplevel
    return "\n" + checkpoint_sizes.table(data["results"]) + "\n"
  if kind == "input_table":
    import benchmark_input  # pylint: disable=import-outside-toplevel
    return "\n" + "\n".join(benchmark_input.recipes_table(data)) + "\n"
  if kind in ("dtensor_step_table", "dtensor_memory_table"):
    import dtensor_tables  # pylint: disable=import-outside-toplevel
    table = dtensor_tables.step_table if kind == "dtensor_step_table" else dtensor_tables.memory_table
    return "\n" + "\n".join(table(data)) + "\n"
  raise ValueError(f"unknown figure kind {kind!r}")
