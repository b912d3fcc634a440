"""The run loop: a method's phases trained in order, scored, the run's files written and the student exported.

No gin here: `mpl_tf.experiment` (the gin edge) parses the configuration, builds the data and the phases, and
hands them to `start` / `train_phases`. A run is the method's sequence of phases (`mpl_tf.algorithms.phases`),
each checkpointed on its own by `mpl_tf.trainer.train_phase`, so re-running the same command after an
interruption skips finished phases and resumes the current one:
  mpl:            mpl -> distill (optional) -> finetune (optional)
  uda/supervised: train -> finetune (optional)
  pseudo_labels:  teacher (supervised) -> train (student on the frozen teacher's labels) -> finetune
  reduced_mpl:    teacher (big, UDA or supervised; its predictions stored, it is freed) -> mpl (reduced teacher
                  over the stored predictions + student) -> finetune
"""
import dataclasses
import gc
import json
import os
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from mpl_tf import layout, progress, trainer
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.data.augment import describe as describe_augmentation
from mpl_tf.data.datasets import describe_classes
from mpl_tf.keras import keras


@dataclasses.dataclass
class RunResult:
  """What a run returns: the metrics written to metrics.json, the method's trained model (of its main phase:
  e.g. the `MetaPseudoLabelsModel`, teacher included) and the student network that is exported."""
  metrics: Dict
  model: keras.Model
  student: keras.Model


def check_method(method: Method, known: List[Method], mesh, jit_compile: Optional[bool]) -> None:
  """Refuses what a method cannot do here: a DTensor mesh it does not support, XLA on a mesh."""
  if mesh is not None and not method.supports_mesh:
    raise NotImplementedError(f"run.method = {method.name!r} does not run on a DTensor mesh yet (supported: "
                              f"{', '.join(m.name for m in known if m.supports_mesh)}); "
                              "use gin/layouts/single_device.gin")
  if jit_compile and mesh is not None:
    raise NotImplementedError("run.jit_compile = True on a DTensor mesh has not been tried; leave it unset there")


def start(workdir: str, seed: int, mesh, mixed_precision: Optional[str]) -> None:
  """Activates the mesh, makes the work directory and seeds every generator the run draws from, before any data
  or network exists."""
  layout.activate(mesh)
  os.makedirs(workdir, exist_ok=True)
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  # Whatever draws from the global generator (tf-keras' stateful RandomGenerator) starts from the run's seed; the
  # data pipeline draws nothing from it (its views are stateless, mpl_tf/data/pipeline.py).
  tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
  keras.mixed_precision.set_global_policy(mixed_precision or "float32")


def announce(workdir: str, data) -> None:
  """Prints the split's classes and the views, and writes `augmentation.json` (the views as resolved)."""
  if not layout.is_chief():
    return
  print(f"mpl_tf: {data.split_name}: {describe_classes(data)}", flush=True)
  if data.augmentation is None:
    return
  with open(os.path.join(workdir, "augmentation.json"), "w") as f:
    json.dump(dataclasses.asdict(data.augmentation), f, indent=2)
  print(f"mpl_tf: {data.split_name}: {describe_augmentation(data.augmentation)} "
        f"({os.path.join(workdir, 'augmentation.json')}; see the views: mpl-views)", flush=True)


def write_config(workdir: str, config: str) -> None:
  """`operative_config.gin`: the configuration the run used (gin's operative string, given by the caller)."""
  if layout.is_chief():
    with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
      f.write(config)


def train_phases(phases: List[Phase], data, *, method: str, seed: int, workdir: str, mesh,
                 operative_config: Callable[[], str], steps_per_execution: int, checkpoint_every: int,
                 summary_every: int, eval_every: int, jit_compile: bool, export: bool, verbose: int) -> RunResult:
  """Trains `phases` in order, scores them, writes metrics.json and exports the student (module doc)."""
  write_config(workdir, operative_config())
  # Curves every `eval_every` steps on the test split (`test/...`: for watching, e.g. the teacher-student gap,
  # never for choosing) and on the validation split when the dataset holds one out (`validation/...`).
  held_out = {"test": data.test, "validation": data.validation}
  common = dict(workdir=workdir, steps_per_execution=steps_per_execution, checkpoint_every=checkpoint_every,
                summary_every=summary_every, verbose=verbose, eval_datasets=held_out, eval_every=eval_every,
                jit_compile=jit_compile)
  # One progress line across the phases (an ETA for the whole run), and TensorBoard steps that continue across
  # them: each phase's summaries start after the steps of the phases before it.
  active = [phase for phase in phases if not phase.skip()]
  run_progress = progress.RunProgress([(phase.name, phase.steps) for phase in active])
  metrics: Dict = {}
  model = main = None
  for phase in active:
    if phase.keep_student_as:
      _keep_student_accuracy(metrics, phase.keep_student_as)
    model = phase.model(model)
    dataset = {"train": data.train, "labeled": data.labeled}[phase.data] if isinstance(phase.data, str) else phase.data()
    trainer.train_phase(model, dataset, phase=phase.name, steps=phase.steps,
                        step_offset=run_progress.offset(phase.name),
                        progress=run_progress if verbose and layout.is_chief() else None, **common)
    if phase.scores == "all":
      metrics.update(evaluate(model, data, prefix=""))
    elif phase.scores == "student":
      metrics.update(_student_metrics(model, data))
    if phase.after is not None:
      metrics.update(phase.after(model) or {})
    main = model if phase.main else main
    if not phase.hand_on:
      model = None
      gc.collect()  # Keras objects hold reference cycles: free this phase's networks before the next is built
  if model is None:
    raise ValueError(f"{method}: its last phase must hand its model on (Phase.hand_on): that model is exported")
  student = model.eval_student
  metrics.update(step=int(main.global_step.numpy()), method=method, seed=seed, split=data.split_name)
  # Gathering a sharded student onto one device is a collective: with several DTensor clients every client
  # makes the copy (a chief gathering alone waits forever for the others), and the chief exports it.
  plain_student = layout.single_device_copy(student, dtype="float32") if export else None
  if layout.is_chief():  # several DTensor clients share the workdir: one writes the run's files
    if export:
      from mpl_tf import export as export_lib  # pylint: disable=import-outside-toplevel
      export_lib.export_student(plain_student, os.path.join(workdir, "export", "student"), data,
                                config=operative_config())
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump(metrics, f, indent=2, sort_keys=True)
  write_config(workdir, operative_config())
  layout.wait_for_clients(mesh, "run_end")  # several DTensor clients: none leaves before the chief has written
  return RunResult(metrics=metrics, model=main, student=student)


def default_jit_compile() -> bool:
  """XLA for the train steps, by device type, as measured: off on CPUs, where tools/benchmark_step.py measures
  XLA slower than TensorFlow's own kernels (BENCHMARKS.md, "XLA on this CPU"). Off on GPUs too until the accelerator benchmark
  (tools/benchmark_accelerator.py) has measured it; on for TPUs, where TensorFlow compiles with XLA anyway."""
  return bool(tf.config.list_logical_devices("TPU"))


def evaluate(model: keras.Model, data, prefix: str) -> Dict[str, float]:
  """Test metrics, plus `validation/...` when the dataset holds a validation split out."""
  out = {prefix + k: float(v) for k, v in model.evaluate(data.test, verbose=0, return_dict=True).items()}
  if data.validation is not None:
    out.update({f"validation/{k}": float(v)
                for k, v in model.evaluate(data.validation, verbose=0, return_dict=True).items()})
  return out


def _keep_student_accuracy(metrics: Dict, suffix: str) -> None:
  """Keeps the student's accuracies (test and validation) under `<key><suffix>` before a later phase changes
  the student, so a results tool can compare the states and choose between them on validation."""
  for key in ("student/accuracy", "validation/student/accuracy"):
    if key in metrics:
      metrics[key + suffix] = metrics[key]


def _student_metrics(model: keras.Model, data) -> Dict[str, float]:
  """`evaluate`'s student metrics only (a post-MPL phase changes the student, never the teacher's figures)."""
  return {k: v for k, v in evaluate(model, data, prefix="").items()
          if k.startswith(("student/", "validation/student/"))}
