"""Supervised training on the labeled data alone: the baseline, the Pseudo Labels teacher, and finetuning.

After MPL the student is finetuned on the labeled data (section 3.2); that phase is this model wrapped around
the MPL student, so finetuning and the supervised baseline are the same code.
"""
from typing import List

import tensorflow as tf

from mpl_tf import losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.keras import keras


class SupervisedModel(SemiSupervisedModel):
  """Cross-entropy on (x_l, y_l); unlabeled parts of an element, if any, are ignored.

  Compile with `optimizer=`. Args: `label_smoothing`; `ema_decay`, `grad_clip_norm` as in `SemiSupervisedModel`.
  """

  def __init__(self, network: keras.Model, label_smoothing: float = 0.0, **kwargs):
    super().__init__(student=network, **kwargs)
    self.label_smoothing = label_smoothing

  def train_step(self, data):
    x_l, y_l, _, _ = unpack(data)
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.student(x_l, training=True)
      loss = tf.reduce_mean(losses.cross_entropy(y_l, logits, self.label_smoothing))
    self._apply(tape, loss, variables, self.optimizer)
    self._track("student/loss", loss)
    self._track_accuracy("student/train_accuracy", y_l, logits)
    return self._finish_step()


def compile_supervised(builder, network: keras.Model, scope: str, steps: int) -> SupervisedModel:
  """Supervised training of `network` with the optimizer bound under `scope` (teacher / finetune)."""
  network.trainable = True
  model = builder.make(SupervisedModel, network)
  model.compile(optimizer=builder.optimizer(scope, steps))
  return model


def finetune(builder) -> List[Phase]:
  """Every method's last phase (section 3.2): the student finetuned on the labeled data, if
  `run.finetune_steps` > 0, with the optimizer of the scope `finetune/`."""
  steps = builder.finetune_steps
  if not steps:
    return []
  return [Phase("finetune", lambda previous: compile_supervised(builder, previous.eval_student, "finetune", steps),
                "labeled", steps, scores="student", keep_student_as="_before_finetune")]


def phases(builder) -> List[Phase]:
  """The supervised baseline: the student on the labeled data only, then finetuning."""
  model = builder.make(SupervisedModel, builder.network(2))
  model.compile(optimizer=builder.optimizer("student", builder.steps))
  return [Phase("train", lambda _: model, "labeled", builder.steps, scores="all", main=True), *finetune(builder)]


METHOD = Method("supervised", phases, configurables=((SupervisedModel, None),))
