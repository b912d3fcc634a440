"""Supervised training on the labeled data alone: the baseline, the Pseudo Labels teacher, and finetuning.

After MPL the student is finetuned on the labeled data (section 3.2); that phase is this model wrapped around
the MPL student, so finetuning and the supervised baseline are the same code.
"""
import tensorflow as tf

from mpl_tf import losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.keras import keras


class SupervisedModel(SemiSupervisedModel):
  """Cross-entropy on (x_l, y_l); unlabeled parts of an element, if any, are ignored.

  Compile with `optimizer=`. Args: `label_smoothing`, `ema_decay` (0 = off), `grad_clip_norm` (0 = off).
  """

  def __init__(self, network: keras.Model, label_smoothing: float = 0.0, ema_decay: float = 0.0,
               grad_clip_norm: float = 0.0, **kwargs):
    super().__init__(student=network, ema_decay=ema_decay, **kwargs)
    self.label_smoothing, self.grad_clip_norm = label_smoothing, grad_clip_norm

  def train_step(self, data):
    x_l, y_l, _, _ = unpack(data)
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.student(x_l, training=True)
      loss = tf.reduce_mean(losses.cross_entropy(y_l, logits, self.label_smoothing))
    grads = self._clip(self._gradients(tape, loss, variables, self.optimizer), self.grad_clip_norm)
    self.optimizer.apply_gradients(zip(grads, variables))
    self._track("student/loss", loss)
    self._track_accuracy("student/train_accuracy", y_l, logits)
    return self._finish_step()
