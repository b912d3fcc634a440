"""The tables of a `tools/benchmark_step.py` run, and the names they are built from (also `--from_json`).

Case names: `mpl/<variant>` (hard or soft, then +uda and/or +recompute), `supervised`, `part/<name>`; ' jit' is appended
for XLA cases and KERAS_LRELU for cases on networks with Keras' own LeakyReLU (`--compare_keras_leaky_relu`).
"""
import statistics

KERAS_LRELU = " @keras-lrelu"  # the name suffix of the cases built with Keras' LeakyReLU

PART_NAMES = ("teacher_uda", "teacher_sup", "student_eval_l", "student_train_u", "student_meta_u", "student_grad_l")
PARTS = {
    "hard": {"student_eval_l": 3, "student_train_u": 1},
    "soft": {"student_eval_l": 2, "student_meta_u": 1, "student_grad_l": 1},
}


def parts_of(variant):
  """The parts a variant's step is made of: 'hard' or 'soft', then '+uda' and/or '+recompute' (the step with
  teacher_activations='recompute', whose second teacher forward pass is not a part: its MPL / parts ratio shows
  what it costs)."""
  mode, *extras = variant.split("+")
  counts = dict(PARTS[mode])
  counts["teacher_uda" if "uda" in extras else "teacher_sup"] = 1
  return counts


def case_name(name: str, jit: bool) -> str:
  return f"{name}{' jit' if jit else ''}"


def render(report) -> str:
  """The tables of a run (also from its saved JSON: `--from_json`); adds the derived figures to `report`: each
  case's median wall, median CPU and best seconds under `medians`, each MPL variant's ratios under `mpl`.

  Per case: median wall, median CPU and best (minimum) wall seconds. Ratios: MPL / sum of its parts and MPL /
  supervised, each within one kind of time: medians of wall, medians of CPU, and minima of wall (the least
  disturbed step of each case; on a loaded machine the closest to an idle one).
  """
  cases, n_img = report["cases"], report["images_per_step"]
  med = {k: statistics.median(v["all_s"]) for k, v in cases.items()}
  cpu = {k: statistics.median(v["all_cpu_s"]) for k, v in cases.items()}
  best = {k: min(v["all_s"]) for k, v in cases.items()}
  report["medians"] = {k: {"wall": med[k], "cpu": cpu[k], "best": best[k]} for k in cases}
  report["mpl"] = {}
  views = [v for v in ("allocator", "rss") if all(f"{v}_mib" in case for case in cases.values())]
  if not views:  # a JSON written before both views existed: its single peak_mib
    views = ["peak"]

  def mib(key):
    return ", ".join(f"{cases[key][f'{v}_mib']:.0f}" for v in views)

  def mem_ratio(key, sup):
    return ", ".join(f"{cases[key][f'{v}_mib'] / cases[sup][f'{v}_mib']:.2f}" for v in views)

  lines = []
  for jit in report["jit"]:
    c = lambda name: case_name(name, jit)  # pylint: disable=unnecessary-lambda-assignment,cell-var-from-loop
    sup = c("supervised")
    lines += [f"\njit {'on' if jit else 'off'}: {report['steps']} interleaved rounds. wall = median wall-clock "
              f"s/step, cpu = median process CPU s/step, best = fastest wall s/step; images/s = {n_img} / wall",
              "| step | wall | images/s | cpu | best | / parts: wall, cpu, best | / supervised: wall, cpu, best "
              "| peak MiB: " + ", ".join(views) + " | memory / supervised |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant in report["variants"]:
      key, counts = c(f"mpl/{variant}"), parts_of(variant)
      parts = {kind: sum(n * table[c(f"part/{p}")] for p, n in counts.items())
               for kind, table in (("wall", med), ("cpu", cpu), ("best", best))}
      to_parts = (med[key] / parts["wall"], cpu[key] / parts["cpu"], best[key] / parts["best"])
      to_sup = (med[key] / med[sup], cpu[key] / cpu[sup], best[key] / best[sup])
      report["mpl"][key] = {
          "s_per_step": med[key], "images_per_s": n_img / med[key], "cpu_s_per_step": cpu[key],
          "best_s_per_step": best[key], "parts": counts, "sum_of_parts": parts,
          "ratio_to_parts": dict(zip(("wall", "cpu", "best"), to_parts)),
          "ratio_to_supervised": dict(zip(("wall", "cpu", "best"), to_sup)), "peak_mib": cases[key]["peak_mib"],
          "memory_to_supervised": {v: cases[key][f"{v}_mib"] / cases[sup][f"{v}_mib"] for v in views}}
      lines.append(f"| mpl/{variant} | {med[key]:.2f} | {n_img / med[key]:.0f} | {cpu[key]:.2f} | {best[key]:.2f} | "
                   + ", ".join(f"{r:.2f}" for r in to_parts) + " | " + ", ".join(f"{r:.2f}" for r in to_sup)
                   + f" | {mib(key)} | {mem_ratio(key, sup)} |")
    lines.append(f"| supervised ({n_img} images) | {med[sup]:.2f} | {n_img / med[sup]:.0f} | {cpu[sup]:.2f} | "
                 f"{best[sup]:.2f} | | 1, 1, 1 | {mib(sup)} | 1 |")
    for name in PART_NAMES:
      key = c(f"part/{name}")
      lines.append(f"| part/{name} | {med[key]:.2f} | | {cpu[key]:.2f} | {best[key]:.2f} | | "
                   f"{med[key] / med[sup]:.2f}, {cpu[key] / cpu[sup]:.2f}, {best[key] / best[sup]:.2f} | "
                   f"{mib(key)} | {mem_ratio(key, sup)} |")
  if len(report["jit"]) == 2:
    names = [f"mpl/{v}" for v in report["variants"]] + ["supervised"]
    lines.append("\njit on / jit off (wall, cpu, best): " + ", ".join(
        f"{n} {med[n + ' jit'] / med[n]:.2f}, {cpu[n + ' jit'] / cpu[n]:.2f}, {best[n + ' jit'] / best[n]:.2f}"
        for n in names))
  if report.get("compare_keras_leaky_relu"):
    lines.append("\nours / Keras' LeakyReLU, same run (cpu, best, " + ", ".join(views) + "); memory / supervised "
                 "with Keras' LeakyReLU (" + ", ".join(views) + "):")
    for jit in report["jit"]:
      sup = case_name("supervised" + KERAS_LRELU, jit)
      for name in [f"mpl/{v}" for v in report["variants"]] + ["supervised"]:
        new, old = case_name(name, jit), case_name(name + KERAS_LRELU, jit)
        lines.append(f"- {new}: {cpu[new] / cpu[old]:.2f}, {best[new] / best[old]:.2f}, " + ", ".join(
            f"{cases[new][f'{v}_mib'] / cases[old][f'{v}_mib']:.2f}" for v in views) + f"; {mem_ratio(old, sup)}")
  lines.append("\npeak MiB, each case alone in a fresh process (tools/step_memory.py): allocator = TensorFlow's "
               "allocator peak in one step above what was allocated before it; rss = the process's peak RSS over "
               "warm-up + 1 steps above its RSS once the case was built and traced")
  return "\n".join(lines)
