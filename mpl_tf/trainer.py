"""Runs one training phase of a compiled model so that it can be killed at any moment and resumed.

Keras `fit` owns its data iterator, so it cannot checkpoint the position in the data. Here the phase owns a
`tf.data` iterator and calls the model's own Keras train function on it (`make_train_function`, which runs
`steps_per_execution` train steps per call), and checkpoints the iterator together with the model: networks,
EMA student, both optimizers, the step and the MPL baseline, and the states of the random generators its dropout
and stochastic-depth layers draw from (`random_generators`). Re-running the same phase restores the latest
checkpoint and continues at the same step and, as far as `tf.data` can checkpoint the pipeline, at the same
element, drawing the masks the uninterrupted phase would have drawn.
A stop signal (`mpl_tf.stopping`) saves the phase at the next step boundary and raises `StopRequested`.
The iterator is checkpointed symbolically (positions, not buffered elements; `cache()` cannot be saved
so). A non-finite metric stops the phase before anything after the last good checkpoint is saved.
"""
import math
import os
from typing import Dict, Optional

import tensorflow as tf

from mpl_tf import layout
from mpl_tf import progress as progress_lib
from mpl_tf import stopping
from mpl_tf.algorithms import recompute
from mpl_tf.keras import keras


class NonFiniteLossError(FloatingPointError):
  """Raised when a training metric becomes NaN or Inf; the last good checkpoint is kept."""


def random_generators(model: keras.Model) -> Dict[str, tf.random.Generator]:
  """The tf.random.Generators that `model`'s random layers (dropout, stochastic depth) draw from, made now if
  not yet, keyed by the layer's place among them (`recompute.random_layers`): their states belong in the phase's
  checkpoint.

  Keras keeps them out of checkpoints (`BaseRandomLayer`), so without this a resumed phase drew other masks than
  the uninterrupted one. Layers on TensorFlow's legacy stateful ops have no state to save; `experiment.network`
  gives every network seeded generators instead. None on a mesh, where the plain state variables cannot go into
  a checkpoint of DVariables (a mesh run's dropout draws other masks than one device's anyway).
  """
  if layout.mesh_of(model) is not None:
    return {}
  out = {}
  for index, layer in enumerate(recompute.random_layers(model)):
    generator = layer._random_generator  # pylint: disable=protected-access
    generator._maybe_init()  # pylint: disable=protected-access
    if generator._generator is not None:  # pylint: disable=protected-access
      out[str(index)] = generator._generator  # pylint: disable=protected-access
  return out


def _to_float(logs) -> Dict[str, float]:
  return {name: float(value) for name, value in logs.items()}


def train_phase(model: keras.Model, dataset: tf.data.Dataset, *, workdir: str, phase: str, steps: int,
                steps_per_execution: int = 1, checkpoint_every: int = 1000, summary_every: int = 100,
                eval_datasets: Optional[Dict[str, tf.data.Dataset]] = None, eval_every: int = 0,
                verbose: int = 1, jit_compile: Optional[bool] = None,
                checkpoint_iterator: bool = True, max_to_keep: int = 2,
                progress: Optional[progress_lib.RunProgress] = None, step_offset: int = 0) -> Dict[str, float]:
  """Trains `model` (already compiled) on `dataset` until its `global_step` reaches `steps`.

  Writes checkpoints to `workdir/checkpoints/<phase>` every `checkpoint_every` steps and at the end,
  TensorBoard scalars (every metric the train step returns, under its own name such as `mpl/h`, plus
  `<name>/...` for each of `eval_datasets` (e.g. `test`, `validation`) every `eval_every` steps: top-1 and,
  beyond 5 classes, top-5 accuracy and loss, with `<name>/teacher_minus_student` when the model scores a teacher
  too: the gap the student must close) to `workdir/summaries/<phase>`, and
  shows the phase's progress (`progress`, a run's `RunProgress`; with verbose and none, one for this phase alone)
  with a line of held-out accuracies at each evaluation. TensorBoard steps are `step_offset` + the phase's step (a
  run passes the steps of its earlier phases, so curves continue across phases). Returns the metrics of the last
  logged window.
  On a mesh of several DTensor clients every client calls this on the shared workdir: all of them save the model
  checkpoint (DTensor saves collectively), only the chief (`layout.is_chief`) the data position and summaries.
  `jit_compile`: compile the train and evaluation steps with XLA (True / False); None keeps the model's setting.
  """
  if checkpoint_iterator:
    # The position (files, counters, any shuffle buffer), saved symbolically: the prefetched batches and
    # in-flight map results are recomputed after a restore instead of stored (in a recipe's checkpoint they were
    # most of its size: docs in BENCHMARKS.md, "Checkpoint sizes"). The pipelines hold no stateful random op
    # (views are drawn statelessly per example); IGNORE keeps saving possible should one hold external state.
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    options.experimental_symbolic_checkpoint = True
    dataset = dataset.with_options(options)
  iterator = layout.iterator(dataset, layout.mesh_of(model))  # iter(dataset) off a DTensor mesh
  objects = {"model": model}
  generators = random_generators(model)
  if generators:
    objects["random_generators"] = generators
  if checkpoint_iterator and layout.checkpointable_iterator(iterator) is not None:
    objects["iterator"] = iterator  # on a mesh the data position has a checkpoint of its own (mpl_tf/layout/inputs.py)
  checkpoint = tf.train.Checkpoint(**objects)
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints", phase), max_to_keep)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
    if checkpoint_iterator:
      layout.restore_position(iterator, manager.latest_checkpoint)  # no-op off a mesh
  step = int(model.global_step.numpy())
  if step >= steps:
    return {}
  if stopping.requested() is not None:  # asked during an earlier phase's evaluation: that phase is saved
    raise stopping.StopRequested(stopping.requested(), phase, step, steps)
  if progress is None and verbose:
    progress = progress_lib.RunProgress([(phase, steps)])
  if progress is not None:
    progress.start_phase(phase, step)
  # Several DTensor clients train one run: the chief writes its curves, the others compute the same values.
  writer = (tf.summary.create_file_writer(os.path.join(workdir, "summaries", phase)) if layout.is_chief()
            else tf.summary.create_noop_writer())
  chunk = max(1, min(steps_per_execution, summary_every or steps_per_execution))
  # tf-keras builds a single-step function when steps_per_execution is 1 at build time, and a loop that
  # reads the variable otherwise: build it with the chunk so later assignments take effect.
  model._steps_per_execution.assign(chunk)  # pylint: disable=protected-access
  if jit_compile is not None:
    model.jit_compile = jit_compile  # read when the train (and test) functions are built, just below
  train_function = model.make_train_function(force=True)
  logs: Dict[str, float] = {}
  model.reset_metrics()
  while step < steps:
    n = min(chunk, steps - step)
    model._steps_per_execution.assign(n)  # pylint: disable=protected-access
    try:
      logs = _to_float(train_function(iterator))
    except tf.errors.InvalidArgumentError as e:
      if "NaN" not in e.message and "Inf" not in e.message:
        raise
      detail = next(line.strip() for line in e.message.splitlines() if "NaN" in line or "Inf" in line)
      raise NonFiniteLossError(
          f"[{phase}] non-finite values in the steps after {step}: {detail}; "
          f"stopped without saving. Last good checkpoint: {manager.latest_checkpoint or 'none'}") from e
    step = int(model.global_step.numpy())
    bad = [name for name, value in logs.items() if not math.isfinite(value)]
    if bad:
      raise NonFiniteLossError(
          f"[{phase}] non-finite {', '.join(f'{b} = {logs[b]}' for b in bad)} in the steps up to {step}; "
          f"stopped without saving. Last good checkpoint: {manager.latest_checkpoint or 'none'}")
    if summary_every and (step % summary_every < n or step == steps):
      with writer.as_default(step=step_offset + step):
        for name, value in logs.items():
          tf.summary.scalar(name, value)
      model.reset_metrics()
    if eval_datasets and eval_every and (step % eval_every < n or step == steps):
      for name, results in _write_evaluation(model, eval_datasets, writer, step_offset + step).items():
        if progress is not None:
          progress.evaluation(phase, step, name, results)
    stop = stopping.requested()
    if step % checkpoint_every < n or step == steps or stop is not None:
      upcoming = os.path.join(manager.directory, f"ckpt-{step}")
      if checkpoint_iterator:  # on a mesh, before the model checkpoint (`layout.save_position`); no-op off one
        layout.save_position(iterator, upcoming)
      saved = manager.save(checkpoint_number=step)
      if saved != upcoming:
        raise RuntimeError(f"the checkpoint was saved as {saved}, its data position as {upcoming}")
      layout.prune_positions(manager.directory, manager.checkpoints)
    if progress is not None:
      progress.update(phase, step, logs)
    if stop is not None and step < steps:
      writer.flush()
      raise stopping.StopRequested(stop, phase, step, steps)
  writer.flush()
  return logs


def _write_evaluation(model: keras.Model, eval_datasets: Dict[str, tf.data.Dataset], writer,
                      step: int) -> Dict[str, Dict[str, float]]:
  """Scores `model` on each held-out set and writes `<set>/<metric>` scalars at `step`; returns the scores."""
  scores = {}
  for eval_name, eval_dataset in eval_datasets.items():
    if eval_dataset is None:
      continue
    results = model.evaluate(eval_dataset, verbose=0, return_dict=True)
    if "teacher/accuracy" in results and "student/accuracy" in results:
      results["teacher_minus_student"] = results["teacher/accuracy"] - results["student/accuracy"]
    with writer.as_default(step=step):
      for name, value in results.items():
        tf.summary.scalar(f"{eval_name}/{name}", value)
    scores[eval_name] = results
  model.reset_metrics()
  return scores
