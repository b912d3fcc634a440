"""Meta Pseudo Labels (Pham et al., CVPR 2021): the teacher learns from how its labels change the student.

One `train_step` (Algorithm 1, with the teacher's auxiliary losses of section 3.2):
  1. the teacher runs once on [x_l, x_u_weak, x_u_strong] in training mode (supervised + UDA losses), or
     without UDA on [x_l, the student's view] only;
  2. pseudo labels from the teacher's logits on `pseudo_label_view` (default: the student's own view): sampled
     from softmax(T(x_u) / tau) (default; tau = `label_temperature`, 1 by default), argmax, or the soft
     distribution itself;
  3. the student takes one optimizer step on (x_u, y_hat) only (label smoothing `student_label_smoothing`): it
     never sees a label during MPL;
  4. the feedback h, from the student's labeled loss measured at three points (`mpl_tf.algorithms.feedback`):
     theta (before), theta' (after) and theta + D0 (where its optimizer would have gone with a zero gradient:
     momentum carry-over and weight decay only). `label_effect` (default) h = L(theta + D0) - L(theta');
     `loss_difference` h = L(theta) - L(theta') (the paper's); `dot_product` its first-order form; `cosine` the
     cosine of the two gradients in that dot product (the appendix's alternative, |h| <= 1). The three loss
     differences are logged (`mpl/h_raw`, `mpl/h_label`, `mpl/h_null` = L(theta) - L(theta + D0)). The losses are
     taken on the same batch with batch norm per `feedback_batch_norm`, dropout off, in full precision, and with
     the same moving statistics, so they measure the weights alone and h is exactly 0 at a zero student
     learning rate (except `cosine`, which does not scale with the step);
  5. the teacher's loss adds (h - b) * reduce_i CE(y_hat_i, T(x_u_i)) with the same y_hat the student trained
     on, scored on the view and at the temperature it was drawn from (hard labels; `mpl_reduction` mean or sum:
     the score function of the distribution the label came from), or the exact one-step meta-gradient through
     the student's real update (soft labels, nested tapes); b is a moving average of h kept in a checkpointed
     variable.
The math is in `mpl_tf.losses`, the derivation in docs/feedback.md; this file only orchestrates tapes,
optimizers and metrics.
"""
import contextlib
from typing import Any, Dict, List, NamedTuple, Optional

import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms import feedback as feedback_lib
from mpl_tf.algorithms import recompute
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.algorithms.pseudo_labels import distill
from mpl_tf.algorithms.supervised import finetune
from mpl_tf.algorithms.base import PSEUDO_LABEL_MODES, VIEWS, SemiSupervisedModel, check_choice, unpack, views_of
from mpl_tf.algorithms.uda import NO_UDA, UDASettings, uda_objective
from mpl_tf.keras import keras
from mpl_tf.schedules import learning_rate_at

FEEDBACK_MODES = feedback_lib.FORMS
TEACHER_ACTIVATIONS = ("keep", "recompute")


class Batch(NamedTuple):
  """A training element as the step reads it (`_split`)."""
  x_l: tf.Tensor
  y_l: tf.Tensor
  u_student: tf.Tensor  # the student's view of the unlabeled batch
  teacher_inputs: Any   # what `_teacher_objective` reads besides (x_l, y_l): `Views`; Reduced MPL: stored predictions


class Views(NamedTuple):
  """The unlabeled batch's views; with one view, `strong` is `weak` and `two` is False."""
  weak: tf.Tensor
  strong: tf.Tensor
  two: bool


class TeacherForward(NamedTuple):
  """The teacher's training-mode forward (`_teacher_objective`): its own loss (supervised, + UDA), its logits on
  the view the pseudo labels come from, and the metrics of its own terms."""
  loss: tf.Tensor
  logits_u: tf.Tensor
  metrics: Dict[str, tf.Tensor]


class PseudoLabelStep(NamedTuple):
  """Steps 2-4 (`_pseudo_label_step`): the student's step, the labels it trained on, the baseline b and h - b;
  soft labels: the one-step meta-objective and, when the labels came from detached logits, its gradient with
  respect to them (`cotangent`, scaled as the teacher's loss is)."""
  student: feedback_lib.StudentStep
  targets: tf.Tensor
  baseline: tf.Tensor
  advantage: tf.Tensor
  meta_objective: Optional[tf.Tensor]
  cotangent: Optional[tf.Tensor]


class MetaPseudoLabelsModel(SemiSupervisedModel):
  """A teacher and a student trained with Meta Pseudo Labels; the (EMA) student is what is returned.

  Example:
    model = MetaPseudoLabelsModel(teacher=build_mlp(2, (2,)), student=build_mlp(2, (2,)))
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
    model.fit(dataset_of_((x_l, y_l), x_u), steps_per_epoch=1000)

  Args:
    teacher, student: functional Keras models producing logits for the same classes.
    pseudo_labels: 'sample' (paper), 'argmax', or 'soft' (exact meta-gradient through the student's update).
    feedback: 'label_effect' (h = L_l(theta + D0) - L_l(theta'): the change the pseudo labels caused),
      'loss_difference' (h = L_l(theta) - L_l(theta'), the paper's and the official code's form) or
      'dot_product' (the first-order form of label_effect) or 'cosine' (cos(grad L_l(theta'), g_hat), the
      appendix's alternative: the sign of dot_product, |h| <= 1, blind to the step's size; works with any
      student optimizer, though with one that is not SGD the step is not along g_hat). Module doc and
      docs/feedback.md.
    feedback_batch_norm: 'train' (the labeled losses use the batch statistics of x_l, dropout off) or
      'inference' (moving statistics); moving statistics are never changed by the measurement.
    mpl_reduction: 'mean' (paper, official) or 'sum' over the unlabeled batch of the hard-label teacher term;
      'sum' is the exact REINFORCE gradient of the expected labeled loss, B_u times 'mean'.
    baseline_decay: decay of the moving-average baseline b subtracted from h; 0 turns the baseline off.
    mpl_weight: weight of the teacher's MPL term. 1 is the method; 0 switches the feedback off and -1 flips
      the sign of h (the popular ports' form): ablations, not recommendations.
    teacher_supervised_weight: weight of the teacher's cross-entropy on labeled data.
    label_smoothing: smoothing of the teacher's supervised target (official CIFAR: 0.15).
    student_label_smoothing: smoothing of the student's pseudo-label target (official: the same flag, 0.15).
    uda: the teacher's UDA consistency term (`UDASettings`; official CIFAR: 8, 5000, 0.7, 0.6), used when the
      elements carry two unlabeled views; None or weight 0: off.
    student_view: which unlabeled view the student trains on when there are two ('strong' or 'weak').
    pseudo_label_view: which of the teacher's views the student's labels are drawn from ('strong', 'weak', or
      None: the student's own view, as in the official code). 'weak' is MPL-pytorch's choice: the teacher is
      most accurate on the weak view, while the student still trains on its own view. The MPL term scores the
      label under the distribution it was drawn from (T on the label's view), so the estimator stays exact.
    teacher_activations: 'keep' (default: the teacher's activations from its one forward pass stay in memory
      through the student's step, until the teacher's backward pass, which needs h) or 'recompute' (the teacher
      runs forward once without a tape for the pseudo labels and again after the student's step for its
      backward pass: the same run, the step's peak memory the larger of the two networks' passes instead of
      their sum, for one more teacher forward pass; any label mode; `mpl_tf.algorithms.recompute`, BENCHMARKS.md "Memory of a
      step"). Its teacher's dropout layers draw from a seeded tf.random.Generator (restorable) instead of
      TensorFlow's legacy random ops.
    label_temperature: tau > 0; the pseudo labels (sampled, argmax or soft) come from softmax(T(x_u) / tau) and
      the MPL term scores them under that distribution (hard: CE(y_hat, T(x_u) / tau); soft: the meta-gradient
      runs through the division), so the estimator stays exact. tau > 1 flattens the labels, tau < 1 sharpens
      them; argmax labels are the same at any tau, only their score changes. The official code defines an MPL
      temperature flag and never reads it (docs/official_recipe.md).
    ema_decay (official CIFAR: 0.995), grad_clip_norm (both networks), seed (pseudo-label sampling): as in
      `SemiSupervisedModel`.
  The student's wait (official CIFAR: 3000 steps at learning rate 0) is its learning-rate schedule's
  (`schedules.WarmupCosine(wait_steps=...)`, gin `mpl.student_wait_steps`); the model needs no part of it.
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, pseudo_labels: str = "sample",
               feedback: str = "label_effect", feedback_batch_norm: str = "train", mpl_reduction: str = "mean",
               baseline_decay: float = 0.99, mpl_weight: float = 1.0, teacher_supervised_weight: float = 1.0,
               label_smoothing: float = 0.0, student_label_smoothing: float = 0.0,
               uda: Optional[UDASettings] = None, student_view: str = "strong",
               pseudo_label_view: Optional[str] = None, teacher_activations: str = "keep",
               label_temperature: float = 1.0, **kwargs):
    super().__init__(student=student, **kwargs)
    check_choice("pseudo_labels", pseudo_labels, PSEUDO_LABEL_MODES)
    check_choice("feedback", feedback, FEEDBACK_MODES)
    check_choice("feedback_batch_norm", feedback_batch_norm, feedback_lib.BATCH_NORM_MODES)
    check_choice("mpl_reduction", mpl_reduction, losses.MPL_REDUCTIONS)
    check_choice("student_view", student_view, VIEWS)
    check_choice("pseudo_label_view", pseudo_label_view, VIEWS + (None,))
    check_choice("teacher_activations", teacher_activations, TEACHER_ACTIVATIONS)
    if not 0.0 <= baseline_decay < 1.0:
      raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
    if not 0.0 <= student_label_smoothing < 1.0:
      raise ValueError(f"student_label_smoothing must be in [0, 1), got {student_label_smoothing}")
    if not 0.0 < label_temperature < float("inf"):
      raise ValueError(f"label_temperature must be a finite number > 0, got {label_temperature}")
    self.teacher = teacher
    self.pseudo_label_mode, self.feedback = pseudo_labels, feedback
    self.feedback_batch_norm, self.mpl_reduction = feedback_batch_norm, mpl_reduction
    self.baseline_decay, self.mpl_weight = baseline_decay, mpl_weight
    self.student_label_smoothing, self.label_temperature = student_label_smoothing, float(label_temperature)
    self.teacher_options = dict(label_smoothing=label_smoothing, supervised_weight=teacher_supervised_weight,
                                uda=uda or NO_UDA)
    self.student_view, self.teacher_activations = student_view, teacher_activations
    if teacher_activations == "recompute":
      recompute.use_restorable_generators(teacher, self.seed)
    self.pseudo_label_view = pseudo_label_view or student_view
    self.step_coefficient = None  # c of the student's optimizer (`feedback.step_coefficient`), set by compile
    self.h_baseline = layout.variable(0.0, self.mesh, dtype=keras.backend.floatx(), trainable=False,
                                      name="h_baseline")

  @property
  def teacher_for_eval(self):
    return self.teacher

  def compile(self, teacher_optimizer: keras.optimizers.Optimizer,
              student_optimizer: keras.optimizers.Optimizer, **kwargs):
    """Two optimizers, one per network (the student's must be SGD for the feedback modes that need its step)."""
    super().compile(**kwargs)
    if teacher_optimizer is student_optimizer:
      raise ValueError("teacher_optimizer and student_optimizer must be two distinct optimizer objects")
    self.step_coefficient = feedback_lib.step_coefficient(student_optimizer)
    needs = [what for what, used in (
        (f"feedback={self.feedback!r}", self.feedback not in ("loss_difference", "cosine")),
        ("pseudo_labels='soft'", self.pseudo_label_mode == "soft")) if used]
    if self.step_coefficient is None and needs:
      raise ValueError(
          f"{' and '.join(needs)} need(s) the student's optimizer to be tf-keras SGD (momentum, Nesterov and "
          f"weight decay allowed; clip with grad_clip_norm, not the optimizer), whose step is linear in the "
          f"gradient; got {type(student_optimizer).__name__}. Use feedback='loss_difference' or 'cosine' with hard "
          f"labels.")
    self.teacher_optimizer, self.student_optimizer = teacher_optimizer, student_optimizer

  # --- one MPL step ------------------------------------------------------------------------------
  def train_step(self, data):
    """Steps 1-5 of the module doc. 'keep' and 'recompute' differ only in where the pseudo labels' teacher
    logits come from: keep draws them from the forward the teacher's tape records, recompute from an earlier
    forward outside any tape, which the recorded one then repeats exactly (`recompute`: same moving statistics,
    same dropout masks), so that the teacher's activations are not alive through the student's step."""
    batch = self._split(data)
    student_lr = learning_rate_at(self.student_optimizer)
    t_vars = self.teacher.trainable_variables
    step = None
    if self.teacher_activations == "recompute":
      state = recompute.snapshot(self.teacher)
      logits = tf.stop_gradient(self._checked(self._teacher_objective(batch)))
      step = self._pseudo_label_step(batch, logits, student_lr, detached=True)
      batch = recompute.after([step.student.h, step.cotangent], batch, name="teacher_input_after_student",
                              xla_barrier=bool(getattr(self, "_jit_compile", False)))
      recompute.restore(self.teacher, state)
    # Only the teacher's variables are watched, so the student's forward and update are not recorded here
    # unless they depend on the teacher's output (soft labels: the nested tape the meta-gradient needs).
    with tf.GradientTape(watch_accessed_variables=False) as t_tape:
      t_tape.watch(t_vars)
      teacher = self._teacher_objective(batch)
      if step is None:
        step = self._pseudo_label_step(batch, self._checked(teacher), student_lr)
      mpl = self._mpl_term(step, teacher.logits_u)
      t_loss = teacher.loss + tf.cast(self.mpl_weight, mpl.dtype) * mpl
    return self._update_teacher(t_tape, teacher, t_loss, t_vars, step, mpl, student_lr)

  # --- the teacher's side: the hooks a variant overrides (ReducedMetaPseudoLabelsModel) ----------------------
  def _split(self, data) -> Batch:
    """A training element -> the student's inputs and what `_teacher_objective` reads (the unlabeled views)."""
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_weak is None:
      raise ValueError("MetaPseudoLabelsModel trains on ((x_l, y_l), x_u) or ((x_l, y_l), (x_u_weak, "
                       "x_u_strong)) elements; got labeled data only")
    views = views_of(u_weak, u_strong)  # with one unlabeled view, it is both the student's and the labels'
    return Batch(x_l=x_l, y_l=y_l, u_student=views[self.student_view],
                 teacher_inputs=Views(views["weak"], views["strong"], two=u_strong is not None))

  def _teacher_objective(self, batch: Batch) -> TeacherForward:
    """The teacher's forward in training mode and its own losses.

    Without UDA the teacher needs the labels' view only: the other view's forward and backward would cost a
    third more teacher work for nothing (tools/benchmark_step.py, BENCHMARKS.md).
    """
    views = batch.teacher_inputs
    label_view = self.pseudo_label_view if views.two else "weak"
    uda_on = self.teacher_options["uda"].weight > 0 and views.two
    t_weak, t_strong = (views.weak, views.strong) if uda_on else (getattr(views, label_view), None)
    t = uda_objective(self.teacher, batch.x_l, batch.y_l, t_weak, t_strong, self.global_step,
                      **self.teacher_options)
    metrics = {"teacher/supervised_loss": t.supervised_loss}
    if t.uda_loss is not None:
      metrics.update({"uda/loss": t.uda_loss, "uda/mask_ratio": t.uda_mask_ratio, "uda/weight": t.uda_weight})
    return TeacherForward(loss=t.loss, logits_u=getattr(t, label_view) if uda_on else t.weak, metrics=metrics)

  # --- steps 2-5 -------------------------------------------------------------------------------------------
  def _pseudo_label_step(self, batch: Batch, t_logits_u: tf.Tensor, student_lr, detached: bool = False):
    """Steps 2-4: pseudo labels from the teacher's logits on the labels' view, the student's step on them with
    its own view, h and h - b. Called inside the teacher's tape (keep), or on `detached` logits (recompute):
    then a soft label's meta-gradient is taken with respect to the logits (`PseudoLabelStep.cotangent`) and
    handed to the recorded forward as a constant."""
    soft = self.pseudo_label_mode == "soft"
    watch = soft and detached
    with tf.GradientTape(watch_accessed_variables=False) if watch else contextlib.nullcontext() as label_tape:
      if watch:
        label_tape.watch(t_logits_u)
      logits = self._label_logits(t_logits_u)  # the labels are drawn from, and scored under, softmax(logits)
      if soft:
        targets = tf.nn.softmax(logits, axis=-1)
      else:
        targets = layout.pseudo_labels(logits, self.pseudo_label_mode, self._sampling_seed(), self.mesh)
      s = feedback_lib.student_step(
          self.student, lambda tape, loss, variables: self._apply(tape, loss, variables, self.student_optimizer),
          self.student_optimizer, batch.x_l, batch.y_l, batch.u_student, targets, student_lr,
          feedback=self.feedback, batch_norm=self.feedback_batch_norm, coefficient=self.step_coefficient,
          label_smoothing=self.student_label_smoothing, need_grads_after=soft)
      baseline = tf.cast(self.h_baseline.read_value(), s.h.dtype)
      # h - b; 0 after a skipped student step (mixed_float16 overflow): that step says nothing about the labels.
      advantage = tf.where(s.stepped, s.h - baseline, tf.zeros_like(s.h))
      meta = losses.soft_meta_objective(s.step_size, s.grads_u, s.grads_after) if soft else None
    cotangent = None
    if watch:  # mixed_float16: the meta-gradient runs back through the student's float16 passes, scaled
      scale = self._teacher_loss_scale()
      cotangent = label_tape.gradient(meta, t_logits_u, output_gradients=None if scale is None else tf.cast(
          scale, meta.dtype))
    return PseudoLabelStep(student=s, targets=targets, baseline=baseline, advantage=advantage,
                           meta_objective=meta, cotangent=cotangent)

  def _mpl_term(self, step: PseudoLabelStep, t_logits_u: tf.Tensor) -> tf.Tensor:
    """Step 5's MPL term on the logits the teacher's tape recorded. Hard labels: (h - b) * CE(y_hat, T(x_u) /
    tau), the score of the label under the distribution it was drawn from. Soft labels: the meta-objective,
    through the student's step (keep) or, after a recompute, its value plus cotangent . logits, whose gradient
    is the meta-gradient (the cotangent unscaled, in float32)."""
    if self.pseudo_label_mode != "soft":
      return losses.mpl_teacher_loss(step.advantage, step.targets, self._label_logits(t_logits_u),
                                     self.mpl_reduction)
    if step.cotangent is None:
      return step.meta_objective
    scale = self._teacher_loss_scale()
    unscaled = tf.stop_gradient(tf.cast(step.cotangent, tf.float32) / (1.0 if scale is None else scale))
    moved = tf.cast(t_logits_u, tf.float32) - tf.stop_gradient(tf.cast(t_logits_u, tf.float32))  # 0, a gradient
    # multiply_no_nan: 0 where `moved` is 0 even when an overflowed loss scale made the cotangent inf (the
    # loss-scale optimizer skips that step; a NaN value would stop the run).
    return step.meta_objective + tf.cast(tf.reduce_sum(tf.math.multiply_no_nan(unscaled, moved)),
                                         step.meta_objective.dtype)

  def _teacher_loss_scale(self) -> Optional[tf.Tensor]:
    if isinstance(self.teacher_optimizer, keras.mixed_precision.LossScaleOptimizer):
      return tf.cast(self.teacher_optimizer.loss_scale, tf.float32)
    return None

  def _label_logits(self, t_logits_u: tf.Tensor) -> tf.Tensor:
    """T(x_u) / tau (`label_temperature`): the logits of the distribution the pseudo labels come from. Inside
    the teacher's tape, so the soft labels' meta-gradient and the hard labels' score both see the division."""
    if self.label_temperature == 1.0:
      return t_logits_u
    return t_logits_u / tf.cast(self.label_temperature, t_logits_u.dtype)

  @staticmethod
  def _checked(teacher: TeacherForward) -> tf.Tensor:
    """The teacher's logits on the labels' view; NaN logits would make sampling return out-of-range labels, so
    the step fails here with a message that says so.

    Only the values are checked, not the gradient that flows back through them: under mixed_float16 a dynamic
    loss scale overflows the scaled gradient by design (LossScaleOptimizer skips that step and lowers the scale),
    and `check_numerics` on the gradient path turned that into a crash.
    """
    check = tf.debugging.check_numerics(tf.stop_gradient(teacher.logits_u),
                                        "MPL teacher logits on the unlabeled batch")
    with tf.control_dependencies([check]):
      return tf.identity(teacher.logits_u)

  def _update_teacher(self, t_tape, teacher: TeacherForward, t_loss, t_vars, step: PseudoLabelStep, mpl,
                      student_lr):
    """The teacher's update, the baseline's, the EMA student's (in `_finish_step`), the step's metrics."""
    teacher_lr = learning_rate_at(self.teacher_optimizer)
    self._apply(t_tape, t_loss, t_vars, self.teacher_optimizer)
    s = step.student
    if self.baseline_decay > 0:  # a skipped student step leaves the baseline as it was
      moved = losses.moving_average(self.h_baseline, s.h, self.baseline_decay)
      self.h_baseline.assign(tf.where(s.stepped, moved, self.h_baseline.read_value()))
    self._track("teacher/loss", t_loss)
    self._track("teacher/mpl_loss", mpl)
    self._track("student/loss", s.loss_u)
    self._track("student/labeled_loss", s.loss_before)
    self._track("mpl/h", s.h)
    self._track("mpl/h_baseline", step.baseline)
    # Diagnostics of the feedback's signal and noise (docs/feedback.md): h_raw = h_null + h_label, where h_null
    # depends on the optimizer's state only and h_label on the pseudo labels.
    self._track("mpl/h_raw", s.h_raw)
    if s.h_label is not None:
      self._track("mpl/h_label", s.h_label)
      self._track("mpl/h_null", s.h_null)
      self._track("mpl/h_label_sq", tf.square(s.h_label))
      self._track("mpl/h_null_sq", tf.square(s.h_null))
    self._track("lr/student", student_lr)
    self._track("lr/teacher", teacher_lr)
    for name, value in teacher.metrics.items():
      self._track(name, value)
    return self._finish_step()


def phases(builder, student_wait_steps: int = 0) -> List[Phase]:
  """MPL (phase 'mpl'), then, if `distill.steps` > 0, the distill phase, then finetuning.

  `student_wait_steps` (gin `mpl.student_wait_steps`; official CIFAR: 3000): the student's learning rate is 0
  for its first N steps and its schedule starts after them. It lives in the student's schedule only.
  """
  if student_wait_steps < 0:
    raise ValueError(f"mpl.student_wait_steps must be >= 0, got {student_wait_steps}")
  model = builder.make(MetaPseudoLabelsModel, teacher=builder.network(1), student=builder.network(2),
                       uda=builder.uda(), seed=builder.seed)
  model.compile(teacher_optimizer=builder.optimizer("teacher", builder.steps),
                student_optimizer=builder.optimizer("student", builder.steps, wait_steps=student_wait_steps))
  return [Phase("mpl", lambda _: model, "train", builder.steps, scores="all", main=True),
          *builder.make(distill, builder), *finetune(builder)]


METHOD = Method("mpl", phases, configurables=((MetaPseudoLabelsModel, None), (phases, "mpl"), (distill, "distill")))
