"""Meta Pseudo Labels (Pham et al., CVPR 2021): the teacher learns from how its labels change the student.

One `train_step` (Algorithm 1, with the teacher's auxiliary losses of section 3.2):
  1. the teacher runs once on [x_l, x_u_weak, x_u_strong] in training mode (supervised + UDA losses), or
     without UDA on [x_l, the student's view] only;
  2. pseudo labels for the student's view: sampled from softmax(T(x_u)) (default), argmax, or the soft
     distribution itself;
  3. the student takes one optimizer step on (x_u, y_hat) only: it never sees a label during MPL;
  4. the feedback h = L_l(theta_S) - L_l(theta_S') (old - new), or by option the exact dot product
     eta_S grad L_l(theta_S')^T grad L_u(theta_S); both labeled losses are taken on the same batch, in
     inference mode (no dropout noise, batch norm on its moving statistics) and with the *same* moving
     statistics, so the student's weight update is the only difference between them and h is exactly 0
     when the student's learning rate is 0;
  5. the teacher's loss adds (h - b) * CE(y_hat, T(x_u)) with the same y_hat the student trained on (hard
     labels), or the exact one-step meta-gradient through the student's update (soft labels, nested tapes);
     b is a moving average of h kept in a checkpointed variable.
The math is in `mpl_tf.losses`; this file only orchestrates tapes, optimizers and metrics.
"""
import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.algorithms.uda import uda_objective
from mpl_tf.keras import keras
from mpl_tf.schedules import delay_learning_rate, learning_rate_at

PSEUDO_LABEL_MODES = ("sample", "argmax", "soft")
FEEDBACK_MODES = ("loss_difference", "dot_product")


class MetaPseudoLabelsModel(SemiSupervisedModel):
  """A teacher and a student trained with Meta Pseudo Labels; the (EMA) student is what is returned.

  Example:
    model = MetaPseudoLabelsModel(teacher=build_mlp(2, (2,)), student=build_mlp(2, (2,)))
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
    model.fit(dataset_of_((x_l, y_l), x_u), steps_per_epoch=1000)

  Args:
    teacher, student: functional Keras models producing logits for the same classes.
    pseudo_labels: 'sample' (paper), 'argmax', or 'soft' (exact meta-gradient through the student's update).
    feedback: 'loss_difference' (h = old - new labeled loss) or 'dot_product' (the paper's exact form).
    baseline_decay: decay of the moving-average baseline b subtracted from h; 0 turns the baseline off.
    mpl_weight: weight of the teacher's MPL term. 1 is the method; 0 switches the feedback off and -1 flips
      the sign of h (the popular ports' form): ablations, not recommendations.
    teacher_supervised_weight: weight of the teacher's cross-entropy on labeled data.
    label_smoothing: smoothing of the teacher's supervised target (official CIFAR: 0.15).
    uda_weight, uda_ramp_steps, uda_temperature, uda_threshold: the teacher's UDA consistency term, off
      when uda_weight is 0 (official CIFAR: 8, 5000, 0.7, 0.6); needs two unlabeled views.
    student_view: which unlabeled view the student trains on when there are two ('strong' or 'weak'); the
      pseudo labels come from the teacher's logits on that same view.
    student_wait_steps: the student's learning rate is 0 for its first N steps (official CIFAR: 3000).
    ema_decay: decay of the student's EMA (official CIFAR: 0.995), 0 = off.
    grad_clip_norm: global-norm gradient clipping for both networks, 0 = off.
    seed: seed of the pseudo-label sampling; each step uses the stateless seed (seed, step).
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, pseudo_labels: str = "sample",
               feedback: str = "loss_difference", baseline_decay: float = 0.99, mpl_weight: float = 1.0,
               teacher_supervised_weight: float = 1.0, label_smoothing: float = 0.0, uda_weight: float = 0.0,
               uda_ramp_steps: int = 0, uda_temperature: float = 1.0, uda_threshold: float = 0.0,
               student_view: str = "strong", student_wait_steps: int = 0, ema_decay: float = 0.0,
               grad_clip_norm: float = 0.0, seed: int = 0, **kwargs):
    super().__init__(student=student, ema_decay=ema_decay, **kwargs)
    if pseudo_labels not in PSEUDO_LABEL_MODES:
      raise ValueError(f"pseudo_labels must be one of {PSEUDO_LABEL_MODES}, got {pseudo_labels!r}")
    if feedback not in FEEDBACK_MODES:
      raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {feedback!r}")
    if student_view not in ("strong", "weak"):
      raise ValueError(f"student_view must be 'strong' or 'weak', got {student_view!r}")
    if not 0.0 <= baseline_decay < 1.0:
      raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
    if student_wait_steps < 0:
      raise ValueError(f"student_wait_steps must be >= 0, got {student_wait_steps}")
    self.teacher = teacher
    self.pseudo_label_mode, self.feedback = pseudo_labels, feedback
    self.baseline_decay, self.mpl_weight = baseline_decay, mpl_weight
    self.teacher_options = dict(
        label_smoothing=label_smoothing, supervised_weight=teacher_supervised_weight, uda_weight=uda_weight,
        uda_ramp_steps=uda_ramp_steps, uda_temperature=uda_temperature, uda_threshold=uda_threshold)
    self.student_view, self.student_wait_steps = student_view, student_wait_steps
    self.grad_clip_norm, self.seed = grad_clip_norm, seed
    self.h_baseline = layout.variable(0.0, self.mesh, dtype=keras.backend.floatx(), trainable=False,
                                      name="h_baseline")

  @property
  def teacher_for_eval(self):
    return self.teacher

  def compile(self, teacher_optimizer: keras.optimizers.Optimizer,
              student_optimizer: keras.optimizers.Optimizer, **kwargs):
    """Two optimizers, one per network; the student's gets the wait steps (learning rate 0) prepended."""
    super().compile(**kwargs)
    if teacher_optimizer is student_optimizer:
      raise ValueError("teacher_optimizer and student_optimizer must be two distinct optimizer objects")
    self.teacher_optimizer, self.student_optimizer = teacher_optimizer, student_optimizer
    delay_learning_rate(student_optimizer, self.student_wait_steps)

  # --- one MPL step ------------------------------------------------------------------------------
  def train_step(self, data):
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_weak is None:
      raise ValueError("MetaPseudoLabelsModel trains on ((x_l, y_l), x_u) or ((x_l, y_l), (x_u_weak, "
                       "x_u_strong)) elements; got labeled data only")
    use_strong = u_strong is not None and self.student_view == "strong"
    u_student = u_strong if use_strong else u_weak
    student_lr = learning_rate_at(self.student_optimizer)
    t_vars = self.teacher.trainable_variables
    # Only the teacher's variables are watched, so the student's forward and update are not recorded here
    # unless they depend on the teacher's output (soft labels: the nested tape the meta-gradient needs).
    # Without UDA the teacher needs the student's view only: the other view's forward and backward would cost
    # a third more teacher work for nothing (tools/benchmark_step.py, BENCHMARKS.md).
    uda_on = self.teacher_options["uda_weight"] > 0 and u_strong is not None
    t_weak, t_strong = (u_weak, u_strong) if uda_on else (u_student, None)
    with tf.GradientTape(watch_accessed_variables=False) as t_tape:
      t_tape.watch(t_vars)
      t = uda_objective(self.teacher, x_l, y_l, t_weak, t_strong, self.global_step, **self.teacher_options)
      # NaN logits would make sampling return out-of-range labels; fail here with a message that says so.
      t_logits_u = tf.debugging.check_numerics(t["strong"] if use_strong else t["weak"],
                                               "MPL teacher logits on the unlabeled batch")
      s, mpl = self._feedback(x_l, y_l, u_student, t_logits_u, student_lr)
      t_loss = t["loss"] + tf.cast(self.mpl_weight, mpl.dtype) * mpl
    self._update_teacher(t_tape, t_loss, t_vars, s, mpl, student_lr)
    self._track("teacher/supervised_loss", t["supervised_loss"])
    if "uda_loss" in t:
      self._track("uda/loss", t["uda_loss"])
      self._track("uda/mask_ratio", t["uda_mask_ratio"])
      self._track("uda/weight", t["uda_weight"])
    return self._finish_step()

  def _feedback(self, x_l, y_l, u, t_logits_u, student_lr):
    """Steps 2-6 (module doc), inside the teacher's tape: pseudo labels from the teacher's logits on the
    student's view `u`, the student's step on them, and the teacher's MPL term.

    Returns (the `_student_step` dict, which also holds the baseline `b` used, and the MPL term).
    """
    soft = self.pseudo_label_mode == "soft"
    if soft:
      targets = tf.nn.softmax(t_logits_u, axis=-1)
    else:
      targets = layout.pseudo_labels(t_logits_u, self.pseudo_label_mode, self._sampling_seed(), self.mesh)
    s = self._student_step(x_l, y_l, u, targets, student_lr, need_grads_after=soft)
    s["baseline"] = tf.cast(self.h_baseline.read_value(), s["h"].dtype)
    if soft:
      mpl = losses.soft_meta_objective(student_lr, s["grads_u"], s["grads_after"])
    else:
      mpl = losses.mpl_teacher_loss(s["h"] - s["baseline"], targets, t_logits_u)
    return s, mpl

  def _update_teacher(self, t_tape, t_loss, t_vars, s, mpl, student_lr):
    """Step 7: the teacher's update, the baseline's, the EMA student's (in `_finish_step`) and shared metrics."""
    t_grads = self._clip(self._gradients(t_tape, t_loss, t_vars, self.teacher_optimizer), self.grad_clip_norm)
    teacher_lr = learning_rate_at(self.teacher_optimizer)
    self.teacher_optimizer.apply_gradients(zip(t_grads, t_vars))
    if self.baseline_decay > 0:
      self.h_baseline.assign(losses.moving_average(self.h_baseline, s["h"], self.baseline_decay))
    self._track("teacher/loss", t_loss)
    self._track("teacher/mpl_loss", mpl)
    self._track("student/loss", s["loss_u"])
    self._track("student/labeled_loss", s["loss_before"])
    self._track("mpl/h", s["h"])
    self._track("mpl/h_baseline", s["baseline"])
    self._track("lr/student", student_lr)
    self._track("lr/teacher", teacher_lr)

  def _student_step(self, x_l, y_l, u, targets, learning_rate, need_grads_after: bool):
    """One optimizer step of the student on (u, targets), with the labeled loss before and after it.

    Returns a dict with the feedback `h`, the pseudo-label loss `loss_u`, the labeled losses `loss_before`
    and `loss_after`, the gradients `grads_u` of the pseudo-label loss (as computed, so that with soft
    targets the caller's tape can differentiate them) and, when asked or needed, `grads_after`, the
    gradient of the labeled loss at the updated weights.
    """
    student, variables = self.student, self.student.trainable_variables
    stats = student.non_trainable_variables
    loss_before = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=False)))
    # Training mode updates the moving statistics of batch norm; keep the old ones for the "after" loss.
    stats_before = [tf.identity(v) for v in stats]
    with tf.GradientTape() as s_tape:
      s_logits_u = student(u, training=True)
      if targets.dtype.is_integer:
        loss_u = tf.reduce_mean(losses.cross_entropy(targets, s_logits_u))
      else:
        loss_u = tf.reduce_mean(losses.soft_cross_entropy(targets, s_logits_u))
    grads_u = self._gradients(s_tape, loss_u, variables, self.student_optimizer)
    applied = self._clip([tf.stop_gradient(g) for g in grads_u], self.grad_clip_norm)
    self.student_optimizer.apply_gradients(zip(applied, variables))

    stats_after = [tf.identity(v) for v in stats]
    for var, value in zip(stats, stats_before):
      var.assign(value)
    with tf.GradientTape() as after_tape:
      loss_after = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=False)))
    grads_after = None
    if need_grads_after or self.feedback == "dot_product":
      grads_after = self._gradients(after_tape, loss_after, variables, self.student_optimizer)
    for var, value in zip(stats, stats_after):
      var.assign(value)

    if self.feedback == "dot_product":
      h = losses.feedback_dot_product(learning_rate, grads_after, applied)
    else:
      h = losses.feedback_from_losses(loss_before, loss_after)
    return {"h": h, "loss_u": loss_u, "loss_before": loss_before, "loss_after": loss_after,
            "grads_u": grads_u, "grads_after": grads_after}
