"""Pseudo Labels (Lee 2013; the paper's section 2 baseline): a fixed, pre-trained teacher labels x_u.

The teacher is frozen (inference mode, never updated); the student trains on its pseudo labels for the
unlabeled batch, plus, weighted by `labeled_weight`, on the labeled batch. This is the method whose
confirmation bias MPL is meant to fix: it can only inherit the teacher's mistakes. With two views the teacher
labels the weak view (`teacher_view`) and the student trains on the strong one, as in Noisy Student: a fixed
teacher gains nothing from labelling RandAugment + Cutout images, where it is least accurate. (MPL is different:
its teacher must be scored on the very images the student trained on, so it labels the student's view.)
"""
from typing import List

import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.algorithms.supervised import compile_supervised, finetune
from mpl_tf.algorithms.base import PSEUDO_LABEL_MODES, VIEWS, SemiSupervisedModel, check_choice, unpack, views_of
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
    ema_decay, grad_clip_norm, seed: as in `SemiSupervisedModel`.
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, pseudo_labels: str = "argmax",
               labeled_weight: float = 1.0, student_view: str = "strong", teacher_view: str = "weak", **kwargs):
    super().__init__(student=student, **kwargs)
    check_choice("pseudo_labels", pseudo_labels, PSEUDO_LABEL_MODES)
    check_choice("student_view", student_view, VIEWS)
    check_choice("teacher_view", teacher_view, VIEWS)
    self.teacher = teacher
    self.teacher.trainable = False
    self.pseudo_label_mode, self.labeled_weight = pseudo_labels, labeled_weight
    self.student_view, self.teacher_view = student_view, teacher_view

  @property
  def teacher_for_eval(self):
    return self.teacher

  def train_step(self, data):
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_weak is None:
      raise ValueError("PseudoLabelsModel needs unlabeled data: ((x_l, y_l), x_u) elements")
    views = views_of(u_weak, u_strong)
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
    self._apply(tape, loss, variables, self.optimizer)
    self._track("student/loss", loss)
    self._track("student/pseudo_label_loss", loss_u)
    self._track("student/labeled_loss", loss_l)
    return self._finish_step()


def phases(builder) -> List[Phase]:
  """Pseudo Labels: the teacher trained supervised (phase 'teacher', `run.teacher_pretrain_steps`), frozen, then
  the student on its labels (phase 'train'), then finetuning."""
  model = builder.make(PseudoLabelsModel, teacher=builder.network(1), student=builder.network(2), seed=builder.seed)
  model.compile(optimizer=builder.optimizer("student", builder.steps))

  def freeze(_):
    model.teacher.trainable = False

  return [Phase("teacher", lambda _: compile_supervised(builder, model.teacher, "teacher", builder.teacher_steps),
                "labeled", builder.teacher_steps, after=freeze),
          Phase("train", lambda _: model, "train", builder.steps, scores="all", main=True),
          *finetune(builder)]


METHOD = Method("pseudo_labels", phases, configurables=((PseudoLabelsModel, None),))


def distill(builder, steps: int = 0, pseudo_labels: str = "soft", labeled_weight: float = 0.0,
            student_view: str = "weak", teacher_view: str = "weak", ema_decay: float = 0.0) -> List[Phase]:
  """MPL's optional phase before finetuning (gin `distill.*`): the student learns from MPL's final teacher, frozen.
  Also the second phase of `uda_distill` (`mpl_tf.algorithms.uda`), where the UDA network learns from a frozen
  copy of itself: the same phase for the baseline, so that what the phase buys is not credited to MPL.

  MPL's student learns from a teacher that improves as it goes, so on a short budget it can end behind the
  teacher it followed (the hard own-data stand-in: ~9 points, RESULTS.md). For `steps` steps (0: no phase) it
  then trains as a Pseudo Labels student of that teacher: by default on the teacher's soft prediction for the
  weak view, with no labeled loss (it still learns only from the teacher), under the optimizer bound in the
  scope `distill/` (`distill/optimizer.learning_rate = 0.05`). Not part of the paper's recipes; the own-data
  default (gin/own_data.gin), chosen on validation stand-ins (studies/student_gap/distill_phase.md).
  """
  if not steps:
    return []

  def model(previous):
    student = previous.eval_student
    teacher = getattr(previous, "teacher", None)
    if teacher is None:  # a one-network method (UDA): a frozen copy of the network, as it ended, teaches it
      teacher = layout.clone_network(student)
      teacher._name = f"teacher_{student.name}"  # pylint: disable=protected-access
    made = builder.make(PseudoLabelsModel, teacher=teacher, student=student, pseudo_labels=pseudo_labels,
                        labeled_weight=labeled_weight, student_view=student_view, teacher_view=teacher_view,
                        ema_decay=ema_decay, seed=builder.seed)
    student.trainable = True  # MPL's EMA student is built frozen (only the EMA update writes it)
    made.compile(optimizer=builder.optimizer("distill", steps))
    return made

  return [Phase("distill", model, "train", steps, scores="student", keep_student_as="_after_mpl")]
