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
from typing import List, Optional

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

FEEDBACK_MODES = ("label_effect", "loss_difference", "dot_product", "cosine")
TEACHER_ACTIVATIONS = ("keep", "recompute")


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
      backward pass: the same run, the step's peak memory about a supervised step's instead of about 1.45x, for
      one more teacher forward pass; any label mode; `mpl_tf.algorithms.recompute`, BENCHMARKS.md "Memory of a
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
    batch = self._split(data)
    student_lr = learning_rate_at(self.student_optimizer)
    t_vars = self.teacher.trainable_variables
    if self.teacher_activations == "recompute":
      return self._train_step_recomputing(batch, student_lr, t_vars)
    # Only the teacher's variables are watched, so the student's forward and update are not recorded here
    # unless they depend on the teacher's output (soft labels: the nested tape the meta-gradient needs).
    with tf.GradientTape(watch_accessed_variables=False) as t_tape:
      t_tape.watch(t_vars)
      t = self._teacher_objective(batch)
      s, mpl, _ = self._feedback(batch["x_l"], batch["y_l"], batch["u_student"], self._checked(t), student_lr)
      t_loss = t["loss"] + tf.cast(self.mpl_weight, mpl.dtype) * mpl
    return self._update_teacher(t_tape, t, t_loss, t_vars, s, mpl, student_lr)

  def _train_step_recomputing(self, batch, student_lr, t_vars):
    """`teacher_activations='recompute'`: the teacher's forward pass runs twice, before the student's step
    (no tape: only its logits are needed, for the pseudo labels) and after it (under the tape, for the backward
    pass). The second repeats the first exactly (`recompute`: same moving statistics, same dropout masks), so
    the step computes what `train_step` does, without the teacher's activations alive through the student's.

    Soft labels: the meta-gradient reaches the teacher only through its logits on the unlabeled batch, so it is
    taken with respect to those logits during the student's step (`label_tape`) and handed to the second forward
    as a constant cotangent.
    """
    soft = self.pseudo_label_mode == "soft"
    state = recompute.snapshot(self.teacher)
    logits = tf.stop_gradient(self._checked(self._teacher_objective(batch)))
    with tf.GradientTape(watch_accessed_variables=False) as label_tape:
      if soft:
        label_tape.watch(logits)
      s, mpl, targets = self._feedback(batch["x_l"], batch["y_l"], batch["u_student"], logits, student_lr)
    scale = None  # mixed_float16: the meta-gradient runs back through the student's float16 passes, scaled
    if isinstance(self.teacher_optimizer, keras.mixed_precision.LossScaleOptimizer):
      scale = tf.cast(self.teacher_optimizer.loss_scale, tf.float32)
    cotangent = label_tape.gradient(mpl, logits, output_gradients=None if scale is None else tf.cast(
        scale, mpl.dtype)) if soft else None
    batch = recompute.after([s["h"], cotangent], batch, name="teacher_input_after_student",
                            xla_barrier=bool(getattr(self, "_jit_compile", False)))
    recompute.restore(self.teacher, state)
    with tf.GradientTape(watch_accessed_variables=False) as t_tape:
      t_tape.watch(t_vars)
      t = self._teacher_objective(batch)
      again = t["logits_u"]
      if soft:  # value: the MPL term; gradient: cotangent . d logits / d theta_T (unscaled, in float32)
        unscaled = tf.stop_gradient(tf.cast(cotangent, tf.float32) / (1.0 if scale is None else scale))
        moved = tf.cast(again, tf.float32) - tf.stop_gradient(tf.cast(again, tf.float32))  # 0, with a gradient
        # multiply_no_nan: 0 where `moved` is 0 even when an overflowed loss scale made the cotangent inf (the
        # loss-scale optimizer skips that step; a NaN value would stop the run).
        mpl = mpl + tf.cast(tf.reduce_sum(tf.math.multiply_no_nan(unscaled, moved)), mpl.dtype)
      else:  # the expression `_feedback` computes, on the recomputed logits
        mpl = losses.mpl_teacher_loss(s["advantage"], targets, self._label_logits(again), self.mpl_reduction)
      t_loss = t["loss"] + tf.cast(self.mpl_weight, mpl.dtype) * mpl
    return self._update_teacher(t_tape, t, t_loss, t_vars, s, mpl, student_lr)

  # --- the teacher's side: the hooks a variant overrides (ReducedMetaPseudoLabelsModel) ----------------------
  def _split(self, data) -> dict:
    """A training element -> {x_l, y_l, u_student (the student's view), and what `_teacher_objective` reads}."""
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_weak is None:
      raise ValueError("MetaPseudoLabelsModel trains on ((x_l, y_l), x_u) or ((x_l, y_l), (x_u_weak, "
                       "x_u_strong)) elements; got labeled data only")
    views = views_of(u_weak, u_strong)  # with one unlabeled view, it is both the student's and the labels'
    return dict(x_l=x_l, y_l=y_l, u_student=views[self.student_view], views=views, two_views=u_strong is not None)

  def _teacher_objective(self, batch: dict) -> dict:
    """The teacher's forward in training mode and its own losses: {loss, logits_u (on the labels' view), metrics}.

    Without UDA the teacher needs the labels' view only: the other view's forward and backward would cost a
    third more teacher work for nothing (tools/benchmark_step.py, BENCHMARKS.md).
    """
    views, two = batch["views"], batch["two_views"]
    label_view = self.pseudo_label_view if two else "weak"
    uda_on = self.teacher_options["uda"].weight > 0 and two
    t_weak, t_strong = (views["weak"], views["strong"]) if uda_on else (views[label_view], None)
    t = uda_objective(self.teacher, batch["x_l"], batch["y_l"], t_weak, t_strong, self.global_step,
                      **self.teacher_options)
    metrics = {"teacher/supervised_loss": t["supervised_loss"]}
    if "uda_loss" in t:
      metrics.update({"uda/loss": t["uda_loss"], "uda/mask_ratio": t["uda_mask_ratio"], "uda/weight": t["uda_weight"]})
    return dict(loss=t["loss"], logits_u=t[label_view] if uda_on else t["weak"], metrics=metrics)

  def _feedback(self, x_l, y_l, u, t_logits_u, student_lr):
    """Steps 2-5 (module doc), inside the teacher's tape: pseudo labels from the teacher's logits on the
    labels' view (`t_logits_u`), the student's step on them with its view `u`, and the teacher's MPL term.

    Returns (the `_student_step` dict, which also holds the baseline `b` used, the MPL term, the pseudo labels).
    """
    soft = self.pseudo_label_mode == "soft"
    logits = self._label_logits(t_logits_u)  # the labels are drawn from, and scored under, softmax(logits)
    if soft:
      targets = tf.nn.softmax(logits, axis=-1)
    else:
      targets = layout.pseudo_labels(logits, self.pseudo_label_mode, self._sampling_seed(), self.mesh)
    s = self._student_step(x_l, y_l, u, targets, student_lr, need_grads_after=soft)
    s["baseline"] = tf.cast(self.h_baseline.read_value(), s["h"].dtype)
    # h - b; 0 after a skipped student step (mixed_float16 overflow): that step says nothing about the labels.
    s["advantage"] = tf.where(s["stepped"], s["h"] - s["baseline"], tf.zeros_like(s["h"]))
    if soft:
      mpl = losses.soft_meta_objective(s["step_size"], s["grads_u"], s["grads_after"])
    else:
      mpl = losses.mpl_teacher_loss(s["advantage"], targets, logits, self.mpl_reduction)
    return s, mpl, targets

  def _label_logits(self, t_logits_u: tf.Tensor) -> tf.Tensor:
    """T(x_u) / tau (`label_temperature`): the logits of the distribution the pseudo labels come from. Inside
    the teacher's tape, so the soft labels' meta-gradient and the hard labels' score both see the division."""
    if self.label_temperature == 1.0:
      return t_logits_u
    return t_logits_u / tf.cast(self.label_temperature, t_logits_u.dtype)

  @staticmethod
  def _checked(teacher: dict) -> tf.Tensor:
    """The teacher's logits on the labels' view; NaN logits would make sampling return out-of-range labels, so
    the step fails here with a message that says so.

    Only the values are checked, not the gradient that flows back through them: under mixed_float16 a dynamic
    loss scale overflows the scaled gradient by design (LossScaleOptimizer skips that step and lowers the scale),
    and `check_numerics` on the gradient path turned that into a crash.
    """
    logits = teacher["logits_u"]
    check = tf.debugging.check_numerics(tf.stop_gradient(logits), "MPL teacher logits on the unlabeled batch")
    with tf.control_dependencies([check]):
      return tf.identity(logits)

  def _update_teacher(self, t_tape, t, t_loss, t_vars, s, mpl, student_lr):
    """The teacher's update, the baseline's, the EMA student's (in `_finish_step`), the step's metrics."""
    teacher_lr = learning_rate_at(self.teacher_optimizer)
    self._apply(t_tape, t_loss, t_vars, self.teacher_optimizer)
    if self.baseline_decay > 0:  # a skipped student step leaves the baseline as it was
      moved = losses.moving_average(self.h_baseline, s["h"], self.baseline_decay)
      self.h_baseline.assign(tf.where(s["stepped"], moved, self.h_baseline.read_value()))
    self._track("teacher/loss", t_loss)
    self._track("teacher/mpl_loss", mpl)
    self._track("student/loss", s["loss_u"])
    self._track("student/labeled_loss", s["loss_before"])
    self._track("mpl/h", s["h"])
    self._track("mpl/h_baseline", s["baseline"])
    # Diagnostics of the feedback's signal and noise (docs/feedback.md): h_raw = h_null + h_label, where h_null
    # depends on the optimizer's state only and h_label on the pseudo labels.
    self._track("mpl/h_raw", s["h_raw"])
    if "h_label" in s:
      self._track("mpl/h_label", s["h_label"])
      self._track("mpl/h_null", s["h_null"])
      self._track("mpl/h_label_sq", tf.square(s["h_label"]))
      self._track("mpl/h_null_sq", tf.square(s["h_null"]))
    self._track("lr/student", student_lr)
    self._track("lr/teacher", teacher_lr)
    for name, value in t["metrics"].items():
      self._track(name, value)
    return self._finish_step()

  def _student_step(self, x_l, y_l, u, targets, learning_rate, need_grads_after: bool):
    """One optimizer step of the student on (u, targets), with its labeled loss measured around it.

    Returns a dict with the feedback `h` (per `self.feedback`), `h_raw`, and, when the optimizer's step is
    known (`step_coefficient`), `h_label` and `h_null`; the pseudo-label loss `loss_u`; the labeled losses
    `loss_before` / `loss_after`; `step_size` (c * eta); the pseudo-label gradients `grads_u` clipped as applied
    but not stopped (so that with soft targets the caller's tape can differentiate them); and, when asked or
    needed, `grads_after`, the gradient of the labeled loss at the updated weights.
    """
    student, variables = self.student, self.student.trainable_variables
    mode = self.feedback_batch_norm

    def measure():
      return feedback_lib.labeled_loss(student, x_l, y_l, mode)

    stats_before = feedback_lib.read_statistics(student)
    loss_before = measure()
    if mode == "train":  # a training-mode forward moved the moving statistics: only the student's step may
      feedback_lib.assign_statistics(student, stats_before)
    with tf.GradientTape() as s_tape:
      s_logits_u = student(u, training=True)
      if targets.dtype.is_integer:
        loss_u = tf.reduce_mean(losses.cross_entropy(targets, s_logits_u, self.student_label_smoothing))
      else:
        smoothed = losses.smooth_targets(targets, self.student_label_smoothing)
        loss_u = tf.reduce_mean(losses.soft_cross_entropy(smoothed, s_logits_u))
    grads_u = self._apply(s_tape, loss_u, variables, self.student_optimizer)
    # A step a loss-scale optimizer skipped (overflowed gradients) moved nothing: zeros stand for its gradients.
    stepped, grads_u = feedback_lib.as_taken(self.student_optimizer, grads_u)
    applied = [None if g is None else tf.stop_gradient(g) for g in grads_u]

    # The losses after the step see the moving statistics of before it (inference mode) and leave them as the
    # student's step set them: the weight update is the only difference between the measurements.
    stats_after = feedback_lib.read_statistics(student)
    if mode == "inference":
      feedback_lib.assign_statistics(student, stats_before)
    grads_after = None
    if need_grads_after or self.feedback in ("dot_product", "cosine"):
      with tf.GradientTape() as after_tape:
        loss_after = measure()
      grads_after = after_tape.gradient(loss_after, variables)
    else:
      loss_after = measure()
    out = {"loss_u": loss_u, "loss_before": loss_before, "loss_after": loss_after, "grads_u": grads_u,
           "grads_after": grads_after, "h_raw": losses.feedback_from_losses(loss_before, loss_after),
           "stepped": stepped}
    if self.step_coefficient is not None:
      out["step_size"] = tf.cast(self.step_coefficient, tf.float32) * learning_rate
      loss_null = feedback_lib.evaluate_at_null_step(student, applied, out["step_size"], measure)
      out["h_label"] = losses.feedback_from_losses(loss_null, loss_after)
      out["h_null"] = losses.feedback_from_losses(loss_before, loss_null)
    feedback_lib.assign_statistics(student, stats_after)

    if self.feedback == "dot_product":
      out["h"] = losses.feedback_dot_product(out["step_size"], grads_after, applied)
    elif self.feedback == "cosine":
      out["h"] = losses.feedback_cosine(grads_after, applied)
    else:
      out["h"] = out["h_label"] if self.feedback == "label_effect" else out["h_raw"]
    return out



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


METHOD = Method("mpl", phases)
