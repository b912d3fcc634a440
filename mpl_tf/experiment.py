"""One experiment, configured by gin: data -> networks -> method -> phases -> evaluation -> files.

gin lives here, at the edge: the algorithm classes are registered as external configurables, so a gin file
sets `MetaPseudoLabelsModel.pseudo_labels = 'soft'` or `MetaPseudoLabelsModel.mpl_weight = 0.0` (an
ablation is a binding, not a copied file), and the method is chosen by `run.method`, never by the dataset.
Optimizers are configured per network with gin scopes: `teacher/optimizer.learning_rate = 0.05`,
`student/...`, `finetune/...`.

A run is a sequence of phases, each checkpointed on its own by `mpl_tf.trainer.train_phase`:
  mpl:            mpl -> distill (optional) -> finetune (optional)
  uda/supervised: train -> finetune (optional)
  pseudo_labels:  teacher (supervised) -> train (student on the frozen teacher's labels) -> finetune
  reduced_mpl:    teacher (big, UDA or supervised) -> its predictions stored, it is freed -> mpl (reduced
                  teacher over the stored predictions + student) -> finetune (`reduced_mpl_phases`)
Re-running the same command after an interruption skips finished phases and resumes the current one.
"""
import dataclasses
import gc
import json
import os
from typing import Dict, Optional

import gin
import tensorflow as tf

from mpl_tf import layout, trainer
from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel
from mpl_tf.algorithms import reduced_mpl
from mpl_tf.algorithms.pseudo_labels import PseudoLabelsModel
from mpl_tf.algorithms.supervised import SupervisedModel
from mpl_tf.algorithms.uda import UDAModel
from mpl_tf.data.augment import describe as describe_augmentation
from mpl_tf.data.datasets import build_dataset
from mpl_tf.keras import keras
from mpl_tf.schedules import WarmupCosine

METHODS = ("mpl", "uda", "supervised", "pseudo_labels", "reduced_mpl")

MetaPseudoLabelsModel = gin.external_configurable(MetaPseudoLabelsModel)
PseudoLabelsModel = gin.external_configurable(PseudoLabelsModel)
SupervisedModel = gin.external_configurable(SupervisedModel)
UDAModel = gin.external_configurable(UDAModel)
ReducedMetaPseudoLabelsModel = gin.external_configurable(reduced_mpl.ReducedMetaPseudoLabelsModel)
build_reduced_teacher = gin.external_configurable(reduced_mpl.build_reduced_teacher)


def parse_gin(files, bindings) -> None:
  """Parses gin, turning gin's errors into one clear message that names the binding or file at fault."""
  # Includes are written from the project root ('gin/data/digits.gin'), so they resolve from any directory.
  gin.add_config_file_search_path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    gin.parse_config_files_and_bindings(files, bindings)
  except (ValueError, KeyError, IOError, SyntaxError) as e:
    raise SystemExit(f"mpl_tf: bad gin configuration ({', '.join(files) or 'no files'}; bindings "
                     f"{bindings}): {e}") from e


@gin.configurable
def optimizer(total_steps: int, learning_rate: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: Optional[float] = None, schedule: str = "constant", warmup_steps: int = 0,
              exclude_from_weight_decay=("batch_norm", "bn")) -> keras.optimizers.Optimizer:
  """SGD (optionally Nesterov) with a constant or linear-warmup + cosine rate over `total_steps`.

  `weight_decay` is tf-keras' decoupled decay (w -= lr * wd * w each step), skipped for variables whose
  name contains one of `exclude_from_weight_decay` (batch norm). The official code adds an L2 term to the
  loss instead; with momentum m that is about a decoupled decay of l2 / (1 - m) (5e-4 -> 5e-3 at m = 0.9).
  Scope it per network: `teacher/optimizer.learning_rate = 0.05`.
  """
  if schedule == "constant":
    lr = learning_rate
  elif schedule == "cosine":
    lr = WarmupCosine(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps)
  else:
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {schedule!r}")
  # On a DTensor mesh (layout.activate) a DTensor optimizer: slots take their variables' layouts.
  opt = layout.make_optimizer(keras.optimizers.SGD, layout.active_mesh(), learning_rate=lr, momentum=momentum,
                              nesterov=nesterov, weight_decay=weight_decay)
  if weight_decay:
    opt.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
  if keras.mixed_precision.global_policy().name == "mixed_float16":
    opt = keras.mixed_precision.LossScaleOptimizer(opt)  # float16 gradients underflow without loss scaling
  return opt


@gin.configurable
def network(num_classes: int, input_shape, seed: int, name: str = gin.REQUIRED, **options) -> keras.Model:
  """Builds a named network (see `mpl_tf.models.builder`); other bindings go to the family's builder."""
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  if builder.model_family(name) in ("mlp", "wide_resnet", "cnn"):
    options.setdefault("seed", seed)
  keras.utils.set_random_seed(seed)
  mesh = layout.active_mesh()  # None: single device, the network as built
  options.update(layout.network_options(builder.model_family(name), mesh))
  net = builder.build_model(name, num_classes=num_classes, input_shape=tuple(input_shape), **options)
  return layout.place_network(net, mesh)


def load_data(seed: int):
  """The run's `DatasetBundle`, from `build_dataset` bindings (`build_dataset.name = 'digits'`, ...)."""
  return build_dataset(seed=seed)  # pylint: disable=no-value-for-parameter


@gin.configurable
def run(workdir: str, method: str = "mpl", steps: int = gin.REQUIRED, seed: int = 0,
        finetune_steps: int = 0, teacher_pretrain_steps: Optional[int] = None, steps_per_execution: int = 1,
        checkpoint_every: int = 1000, summary_every: int = 100, eval_every: int = 0,
        mixed_precision: Optional[str] = None, export: bool = True, verbose: int = 1) -> Dict:
  """Trains `method` for `steps`, finetunes, evaluates, writes metrics.json and exports the student.

  For MPL, `distill.steps` adds a phase between MPL and finetuning: the student goes on learning from the
  final, frozen teacher's labels (`distill_phase`), so that it catches up with a teacher it trailed.
  Returns the final metrics: accuracies on the test set as fractions, `step` (of the method's phase), and,
  when the dataset holds a validation split out, the same metrics on it under `validation/...`.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
  # The DTensor mesh (gin/layouts/*.gin; None = single device), made before TensorFlow runs its first op.
  layout.check_method(method, layout.activate(layout.mesh_from_config()))
  os.makedirs(workdir, exist_ok=True)
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  # keras-cv's augmentation layers draw from the global generator, which op determinism requires be seeded.
  tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
  keras.mixed_precision.set_global_policy(mixed_precision or "float32")
  data = load_data(seed)
  _write_augmentation(workdir, data)
  # reduced_mpl builds its student only once the big teacher is gone (reduced_mpl_phases).
  model = build_method(method, data, seed, steps) if method != "reduced_mpl" else None
  _write_config(workdir)
  # Curves on held-out data every `eval_every` steps: the validation split, or the test split when the dataset
  # holds none out (tagged `test/...`: for watching, e.g. the teacher-student gap, never for choosing).
  held_out = ("validation", data.validation) if data.validation is not None else ("test", data.test)
  common = dict(workdir=workdir, steps_per_execution=steps_per_execution, checkpoint_every=checkpoint_every,
                summary_every=summary_every, verbose=verbose,
                eval_dataset=held_out[1], eval_every=eval_every, eval_name=held_out[0])
  if method == "pseudo_labels":
    pretrain = compile_supervised(model.teacher, "teacher", teacher_pretrain_steps or steps)
    trainer.train_phase(pretrain, data.labeled, phase="teacher", steps=teacher_pretrain_steps or steps, **common)
    model.teacher.trainable = False
  train_data = data.train if method != "supervised" else data.labeled
  if method == "reduced_mpl":
    model, train_data, stored = reduced_mpl_phases(data, seed, steps, teacher_pretrain_steps or steps, common)
  trainer.train_phase(model, train_data, phase="mpl" if method in ("mpl", "reduced_mpl") else "train",
                      steps=steps, **common)
  metrics = evaluate(model, data, prefix="")
  if method == "reduced_mpl":  # the reduced teacher scored on the big teacher's stored test predictions
    metrics["teacher/accuracy"] = reduced_mpl.evaluate_reduced_teacher(model.teacher, stored.test,
                                                                      stored.test_labels)
    metrics["big_teacher/accuracy"] = stored.big_teacher_accuracy
  student = model.eval_student
  distill_steps, distill_options = distill_phase() if method == "mpl" else (0, {})
  if distill_steps:
    _keep_student_accuracy(metrics, "_after_mpl")
    distill = PseudoLabelsModel(teacher=model.teacher, student=student, seed=seed, **distill_options)
    student.trainable = True  # MPL's EMA student is built frozen (only the EMA update writes it)
    with gin.config_scope("distill"):
      distill.compile(optimizer=optimizer(total_steps=distill_steps))
    trainer.train_phase(distill, data.train, phase="distill", steps=distill_steps, **common)
    metrics.update(_student_metrics(distill, data))
    student = distill.eval_student
  if finetune_steps:
    _keep_student_accuracy(metrics, "_before_finetune")
    tuned = compile_supervised(student, "finetune", finetune_steps)
    trainer.train_phase(tuned, data.labeled, phase="finetune", steps=finetune_steps, **common)
    metrics.update(_student_metrics(tuned, data))
  metrics.update(step=int(model.global_step.numpy()), method=method, seed=seed, split=data.split_name)
  if layout.is_chief():  # several DTensor clients share the workdir: one writes the run's files
    if export:
      from mpl_tf import export as export_lib  # pylint: disable=import-outside-toplevel
      export_lib.export_student(student, os.path.join(workdir, "export", "student"), data)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump(metrics, f, indent=2, sort_keys=True)
  _write_config(workdir)
  return metrics


def build_method(method: str, data, seed: int, steps: int) -> keras.Model:
  """The compiled Keras model for `method`, with fresh networks seeded from `seed`."""
  def net(offset):
    return network(data.num_classes, data.input_shape, seed=seed * 10 + offset)
  if method in ("mpl", "reduced_mpl"):
    if method == "mpl":
      model = MetaPseudoLabelsModel(teacher=net(1), student=net(2), seed=seed)
    else:  # the student and the small reduced teacher of reduced_mpl_phases
      model = ReducedMetaPseudoLabelsModel(teacher=build_reduced_teacher(data.num_classes, seed=seed * 10 + 3),
                                           student=net(2), seed=seed)
    with gin.config_scope("teacher"):
      t_opt = optimizer(total_steps=steps)
    with gin.config_scope("student"):
      s_opt = optimizer(total_steps=steps - model.student_wait_steps)
    model.compile(teacher_optimizer=t_opt, student_optimizer=s_opt)
    return model
  if method == "uda":
    model = UDAModel(net(2))
  elif method == "supervised":
    model = SupervisedModel(net(2))
  else:
    model = PseudoLabelsModel(teacher=net(1), student=net(2), seed=seed)
  with gin.config_scope("student"):
    model.compile(optimizer=optimizer(total_steps=steps))
  return model


@gin.configurable("reduced_mpl")
def reduced_mpl_phases(data, seed: int, steps: int, teacher_steps: int, common: Dict,
                       big_teacher_method: str = "uda"):
  """Reduced MPL's first phases (paper, Appendix E; `mpl_tf/algorithms/reduced_mpl.py`).

  Trains the big teacher (`big_teacher_method`: 'uda' on the two-view training data, or 'supervised' on the
  labeled data; network and optimizer under the gin scope `big_teacher`, e.g. `big_teacher/network.name`)
  for `teacher_steps` (phase 'teacher'), stores its probabilities on the clean labeled, unlabeled and test
  images in `workdir/predictions/big_teacher.npz`, and frees it. Only then builds the reduced teacher and the
  student (`build_method('reduced_mpl', ...)`: reduced teacher optimizer under `teacher/`, student under
  `student/`). A resumed run with the predictions on disk skips the big teacher altogether.
  Returns (the compiled reduced MPL model, its training dataset, the `StoredPredictions`).
  """
  if big_teacher_method not in ("uda", "supervised"):
    raise ValueError(f"reduced_mpl.big_teacher_method must be 'uda' or 'supervised', got {big_teacher_method!r}")
  inputs = reduced_mpl.dataset_inputs(data)
  path = os.path.join(common["workdir"], "predictions", "big_teacher.npz")
  if not os.path.exists(path):
    with gin.config_scope("big_teacher"):
      big = network(data.num_classes, data.input_shape, seed=seed * 10 + 1)
      big_model = UDAModel(big) if big_teacher_method == "uda" else SupervisedModel(big)
      big_model.compile(optimizer=optimizer(total_steps=teacher_steps))
    trainer.train_phase(big_model, data.train if big_teacher_method == "uda" else data.labeled, phase="teacher",
                        steps=teacher_steps, **common)
    reduced_mpl.store_predictions(big_model.eval_student, inputs, data.test).save(path)
    del big, big_model
  gc.collect()  # the big teacher's Keras objects hold reference cycles: free them before the student exists
  stored = reduced_mpl.StoredPredictions.load(path, data.split_digest)
  model = build_method("reduced_mpl", data, seed, steps)
  train = reduced_mpl.stored_prediction_dataset(inputs, stored, batch_size=data.batch_size,
                                                unlabeled_batch_size=data.unlabeled_batch_size, seed=seed)
  return model, train, stored


@gin.configurable("distill")
def distill_phase(steps: int = 0, pseudo_labels: str = "soft", labeled_weight: float = 0.0,
                  student_view: str = "weak", teacher_view: str = "weak", ema_decay: float = 0.0):
  """MPL's optional phase before finetuning: the student learns from MPL's final teacher, now frozen.

  MPL's student learns from a teacher that improves as it goes, so on a short budget it can end behind the
  teacher it followed (the hard own-data stand-in: ~9 points, RESULTS.md). For `steps` steps (0: no phase) it
  then trains as a Pseudo Labels student (`PseudoLabelsModel`) of that teacher: by default on the teacher's
  soft prediction for the weak view, with no labeled loss (it still learns only from the teacher), under the
  optimizer bound in the scope `distill/` (`distill/optimizer.learning_rate = 0.05`). Not part of the paper's
  recipes; the own-data default (gin/own_data.gin), chosen on validation stand-ins.
  Returns (steps, the `PseudoLabelsModel` options).
  """
  return steps, dict(pseudo_labels=pseudo_labels, labeled_weight=labeled_weight, student_view=student_view,
                     teacher_view=teacher_view, ema_decay=ema_decay)


def compile_supervised(network_: keras.Model, scope: str, steps: int) -> SupervisedModel:
  """Supervised training of `network_` with the optimizer bound under `scope` (teacher / finetune)."""
  network_.trainable = True
  model = SupervisedModel(network_)
  with gin.config_scope(scope):
    model.compile(optimizer=optimizer(total_steps=steps))
  return model


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


def _write_augmentation(workdir: str, data) -> None:
  """`augmentation.json`: the views the run trains on, as resolved (defaults, bindings, image statistics)."""
  if data.augmentation is None or not layout.is_chief():
    return
  with open(os.path.join(workdir, "augmentation.json"), "w") as f:
    json.dump(dataclasses.asdict(data.augmentation), f, indent=2)
  print(f"mpl_tf: {data.split_name}: {describe_augmentation(data.augmentation)} "
        f"({os.path.join(workdir, 'augmentation.json')}; see the views: python tools/show_views.py)", flush=True)


def _write_config(workdir: str) -> None:
  if not layout.is_chief():
    return
  with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
    f.write(gin.operative_config_str())
