"""One experiment, configured by gin: data -> networks -> method -> fit -> (finetune) -> evaluate -> files.

gin lives here, at the edge: the algorithm classes are registered as external configurables, so a gin file
sets `MetaPseudoLabelsModel.pseudo_labels = 'soft'` or `MetaPseudoLabelsModel.mpl_weight = 0.0` (an
ablation is a binding, not a copied file), and the method is chosen by `run.method`, never by the dataset.
Optimizers are configured per network with gin scopes: `teacher/optimizer.learning_rate = 0.05`.
"""
import json
import os
from typing import Dict, Optional

import gin
import tensorflow as tf

from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel
from mpl_tf.algorithms.pseudo_labels import PseudoLabelsModel
from mpl_tf.algorithms.supervised import SupervisedModel
from mpl_tf.algorithms.uda import UDAModel
from mpl_tf.keras import keras
from mpl_tf.schedules import WarmupCosine

METHODS = ("mpl", "uda", "supervised", "pseudo_labels")

MetaPseudoLabelsModel = gin.external_configurable(MetaPseudoLabelsModel)
PseudoLabelsModel = gin.external_configurable(PseudoLabelsModel)
SupervisedModel = gin.external_configurable(SupervisedModel)
UDAModel = gin.external_configurable(UDAModel)


@gin.configurable
def optimizer(learning_rate: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: Optional[float] = None, schedule: str = "constant", total_steps: int = 0,
              warmup_steps: int = 0) -> keras.optimizers.Optimizer:
  """SGD (optionally Nesterov) with a constant or warmup+cosine rate; scope it: `student/optimizer.*`."""
  if schedule == "constant":
    lr = learning_rate
  elif schedule == "cosine":
    lr = WarmupCosine(learning_rate, total_steps=total_steps, warmup_steps=warmup_steps)
  else:
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {schedule!r}")
  return keras.optimizers.SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@gin.configurable
def network(num_classes: int, input_shape, seed: int, name: str = "mlp", **options) -> keras.Model:
  """Builds a named network; every option not listed here is passed to the model family's builder."""
  from mpl_tf.models.mlp import build_mlp  # pylint: disable=import-outside-toplevel
  if name == "mlp":
    return build_mlp(num_classes, input_shape, seed=seed, **options)
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  return builder.build_model(name, num_classes=num_classes, input_shape=input_shape, **options)


@gin.configurable
def dataset(seed: int, name: str = "two_moons", **options) -> Dict[str, object]:
  """The data of a run: a dict with `train`, `labeled`, `test`, `num_classes`, `input_shape`, `split_name`."""
  if name == "two_moons":
    from mpl_tf.data.two_moons import two_moons_datasets  # pylint: disable=import-outside-toplevel
    return two_moons_datasets(seed=seed, **options)
  raise ValueError(f"unknown dataset {name!r}; known: two_moons")


def build_method(method: str, data: Dict[str, object], seed: int) -> keras.Model:
  """The compiled Keras model for `method`, with fresh networks seeded from `seed`."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
  def net(offset):
    return network(data["num_classes"], data["input_shape"], seed=seed * 10 + offset)
  if method == "mpl":
    model = MetaPseudoLabelsModel(teacher=net(1), student=net(2), seed=seed)
    with gin.config_scope("teacher"):
      t_opt = optimizer()
    with gin.config_scope("student"):
      s_opt = optimizer()
    model.compile(teacher_optimizer=t_opt, student_optimizer=s_opt, steps_per_execution=_steps_per_execution())
    return model
  if method == "uda":
    model = UDAModel(net(2))
  elif method == "supervised":
    model = SupervisedModel(net(2))
  else:
    model = PseudoLabelsModel(teacher=net(1), student=net(2), seed=seed)
  with gin.config_scope("student"):
    model.compile(optimizer=optimizer(), steps_per_execution=_steps_per_execution())
  return model


@gin.configurable
def _steps_per_execution(steps_per_execution: int = 1) -> int:
  """Steps fused into one `tf.function` call; large values make tiny networks (TwoMoon) fast."""
  return steps_per_execution


@gin.configurable(denylist=["workdir"])
def run(workdir: str, method: str = "mpl", steps: int = gin.REQUIRED, seed: int = 0,
        teacher_pretrain_steps: Optional[int] = None, finetune_steps: int = 0, verbose: int = 0) -> Dict:
  """Trains `method` for `steps`, finetunes the student, evaluates, and writes `metrics.json` to workdir.

  Pseudo Labels first trains its teacher with supervised learning (`teacher_pretrain_steps`, default
  `steps`) and then freezes it. Returns the final metrics (accuracies as fractions of the test set).
  """
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  os.makedirs(workdir, exist_ok=True)
  data = dataset(seed=seed)
  model = build_method(method, data, seed)
  if method == "pseudo_labels":
    teacher = SupervisedModel(model.teacher)
    with gin.config_scope("teacher"):
      teacher.compile(optimizer=optimizer(), steps_per_execution=_steps_per_execution())
    teacher.fit(data["labeled"], steps_per_epoch=teacher_pretrain_steps or steps, epochs=1, verbose=verbose)
  model.fit(data["train"], steps_per_epoch=steps, epochs=1, verbose=verbose)
  metrics = {k: float(v) for k, v in model.evaluate(data["test"], verbose=0, return_dict=True).items()}
  if finetune_steps:
    finetuned = finetune(model.eval_student, data, finetune_steps, verbose)
    metrics["student/accuracy_before_finetune"] = metrics["student/accuracy"]
    metrics["student/accuracy"] = float(finetuned.evaluate(data["test"], verbose=0,
                                                           return_dict=True)["student/accuracy"])
  metrics.update(step=int(model.global_step.numpy()), method=method, seed=seed, split=data["split_name"])
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  with open(os.path.join(workdir, "operative_config.gin"), "w") as f:
    f.write(gin.operative_config_str())
  return metrics


def finetune(student: keras.Model, data: Dict[str, object], steps: int, verbose: int = 0) -> keras.Model:
  """The paper's last phase: the student alone, supervised on the labeled data (scope `finetune/`)."""
  student.trainable = True
  model = SupervisedModel(student)
  with gin.config_scope("finetune"):
    model.compile(optimizer=optimizer(), steps_per_execution=_steps_per_execution())
  model.fit(data["labeled"], steps_per_epoch=steps, epochs=1, verbose=verbose)
  return model
