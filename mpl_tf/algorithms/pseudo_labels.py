"""Pseudo Labels (Lee 2013; the paper's section 2 baseline): a fixed, pre-trained teacher labels x_u.

The teacher is frozen (inference mode, never updated); the student trains on its pseudo labels for the
unlabeled batch, plus, weighted by `labeled_weight`, on the labeled batch. This is the method whose
confirmation bias MPL is meant to fix: it can only inherit the teacher's mistakes. With two views the teacher
labels the weak view (`teacher_view`) and the student trains on the strong one, as in Noisy Student: a fixed
teacher gains nothing from labelling RandAugment + Cutout images, where it is least accurate. (MPL is different:
its teacher must be scored on the very images the student trained on, so it labels the student's view.)
"""
import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.keras import keras


class PseudoLabelsModel(SemiSupervisedModel):
  """Student trained on a fixed teacher's pseudo labels. Compile with `optimizer=` (the student's).

  Args:
    teacher: a trained network; it is not updated.
    student: the network that learns.
    pseudo_labels: 'argmax' (classic hard labels), 'sample' (drawn from the teacher's softmax) or 'soft'.
    labeled_weight: weight of the student's CE on the labeled batch (0: pseudo labels only).
    student_view: 'strong' or 'weak' when elements carry two views: what the student trains on.
    teacher_view: 'weak' or 'strong' when elements carry two views: what the teacher labels.
    ema_decay, grad_clip_norm, seed: as in `MetaPseudoLabelsModel`.
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, pseudo_labels: str = "argmax",
               labeled_weight: float = 1.0, student_view: str = "strong", teacher_view: str = "weak",
               ema_decay: float = 0.0, grad_clip_norm: float = 0.0, seed: int = 0, **kwargs):
    super().__init__(student=student, ema_decay=ema_decay, **kwargs)
    if pseudo_labels not in ("argmax", "sample", "soft"):
      raise ValueError(f"pseudo_labels must be 'argmax', 'sample' or 'soft', got {pseudo_labels!r}")
    for name, view in (("student_view", student_view), ("teacher_view", teacher_view)):
      if view not in ("strong", "weak"):
        raise ValueError(f"{name} must be 'strong' or 'weak', got {view!r}")
    self.teacher = teacher
    self.teacher.trainable = False
    self.pseudo_label_mode, self.labeled_weight = pseudo_labels, labeled_weight
    self.student_view, self.teacher_view = student_view, teacher_view
    self.grad_clip_norm, self.seed = grad_clip_norm, seed

  @property
  def teacher_for_eval(self):
    return self.teacher

  def train_step(self, data):
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_weak is None:
      raise ValueError("PseudoLabelsModel needs unlabeled data: ((x_l, y_l), x_u) elements")
    views = {"weak": u_weak, "strong": u_weak if u_strong is None else u_strong}
    u = views[self.student_view]
    t_logits = self.teacher(views[self.teacher_view], training=False)
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      s_logits_l, s_logits_u = layout.split(self.student(tf.concat([x_l, u], 0), training=True), [x_l, u], self.mesh)
      if self.pseudo_label_mode == "soft":
        loss_u = tf.reduce_mean(losses.soft_cross_entropy(tf.nn.softmax(t_logits), s_logits_u))
      else:
        y_hat = layout.pseudo_labels(t_logits, self.pseudo_label_mode, self._sampling_seed(), self.mesh)
        loss_u = tf.reduce_mean(losses.cross_entropy(y_hat, s_logits_u))
      loss_l = tf.reduce_mean(losses.cross_entropy(y_l, s_logits_l))
      loss = loss_u + self.labeled_weight * loss_l
    grads = self._clip(self._gradients(tape, loss, variables, self.optimizer), self.grad_clip_norm)
    self.optimizer.apply_gradients(zip(grads, variables))
    self._track("student/loss", loss)
    self._track("student/pseudo_label_loss", loss_u)
    self._track("student/labeled_loss", loss_l)
    return self._finish_step()
