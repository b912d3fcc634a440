"""Training runs as the results tools use them: one run in its own process, cached by its metrics.json; the
scalars it logged; and the paired statistics every comparison reports (`mpl-compare`, studies/ablations/ablations.py).

One run per process because a Keras session carries state (seeds, gin, compiled functions) that must not leak
from one arm into the next; the cache makes a sweep resumable: rerun the same command and finished runs are read
back, an unfinished one resumes from its checkpoint."""
import json
import os
import statistics
import subprocess
import sys
import time


def train(gin_file, workdir: str, bindings) -> dict:
  """Runs `python -m mpl_tf.train` in `workdir` unless it finished before; returns its metrics.json.

  An interrupted run is resumed by the trainer (same command, same workdir), so a sweep can be restarted.
  `gin_file`: one file or a list (later ones override).
  """
  gin_files = [gin_file] if isinstance(gin_file, str) else list(gin_file)
  metrics_path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(metrics_path):
    cmd = [sys.executable, "-m", "mpl_tf.train", *(f"--gin_file={g}" for g in gin_files), f"--workdir={workdir}",
           "--gin_bindings=run.verbose = 0"] + [f"--gin_bindings={b}" for b in bindings]
    start = time.time()
    subprocess.run(cmd, check=True)
    print(f"{workdir}: {time.time() - start:.0f} s", flush=True)
  with open(metrics_path) as f:
    return json.load(f)


def thread_prefix() -> str:
  """'TF_NUM_INTRAOP_THREADS=N ' when the sweep runs with it set, else ''; written before a report's command.

  The intra-op thread count changes the order in which TensorFlow sums floats, so a figure regenerates bit for
  bit only with the count it was measured with; the runs inherit this environment.
  """
  threads = os.environ.get("TF_NUM_INTRAOP_THREADS")
  return f"TF_NUM_INTRAOP_THREADS={threads} " if threads else ""


def scalars(workdir: str, phase: str) -> dict:
  """{tag: {step: value}} of the TensorBoard scalars a run wrote for `phase` (`workdir/summaries/<phase>`)."""
  import glob  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  values = {}
  for path in glob.glob(os.path.join(workdir, "summaries", phase, "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        values.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
  return values


def mean_std(values) -> str:
  """Fractions as 'mean +- std' in percent (sample std; 0 for one value); None entries skipped; '-' if none."""
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{100 * statistics.mean(values):.2f} +- {100 * std:.2f}"


def results_table(results: dict) -> list:
  """tools/results_table.py's table: per method the student (mean +- std), before finetuning, the teacher where
  the method has one, and the student per seed. `results`: method -> the metrics.json of each seed's run."""
  lines = ["| method | student (mean +- std) | student before finetune | teacher | per seed (student) |",
           "| --- | --- | --- | --- | --- |"]
  for method, runs in results.items():
    student = [r["student/accuracy"] for r in runs]
    before = [r["student/accuracy_before_finetune"] for r in runs if "student/accuracy_before_finetune" in r]
    teacher = [r["teacher/accuracy"] for r in runs if "teacher/accuracy" in r]
    per_seed = ", ".join(f"{100 * v:.1f}" for v in student)
    cells = " | ".join(mean_std(v) for v in (student, before, teacher))
    lines.append(f"| {method} | {cells} | {per_seed} |")
  return lines


def paired_stats(diffs) -> dict:
  """Per-seed differences (percentage points) -> mean, sample std, paired t (nan when std is 0 or one seed) and
  the counts of seeds better / equal / worse."""
  mean = statistics.mean(diffs)
  std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
  t = mean / (std / len(diffs) ** 0.5) if std > 0 else float("nan")
  return dict(mean=mean, std=std, t=t, better=sum(d > 0 for d in diffs), equal=sum(d == 0 for d in diffs),
              worse=sum(d < 0 for d in diffs))


def paired_row(label: str, diffs) -> str:
  """One markdown row: | label | mean | std | paired t | better / equal / worse |."""
  p = paired_stats(diffs)
  return (f"| {label} | {p['mean']:+.2f} | {p['std']:.2f} | {p['t']:+.2f} | "
          f"{p['better']} / {p['equal']} / {p['worse']} |")
