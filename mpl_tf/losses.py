"""The math of Meta Pseudo Labels and its baselines, as pure functions of tensors.

Equation numbers refer to the paper (Pham et al., "Meta Pseudo Labels", CVPR 2021, arXiv 2003.10580):
Eq. 1 is the student's pseudo-label objective L_u, Eq. 2/3 the teacher's one-step meta objective
L_l(theta_S - eta_S * grad L_u(theta_T, theta_S)), Appendix A the score-function (REINFORCE) gradient for
hard pseudo labels. `docs/feedback.md` derives the feedback used here and lists the defects of public code that
these functions avoid: the teacher term here always has a non-zero gradient, h is old - new, and the teacher is
scored on the very label the student trained on.

Nothing here touches variables or models: the Keras models in `mpl_tf.algorithms` only orchestrate tapes,
optimizers and metrics around these functions.
"""
from typing import Sequence, Tuple

import tensorflow as tf


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
  """Per-example CE(y, softmax(logits)) for integer labels, with optional label smoothing.

  Label smoothing mixes the one-hot target with the uniform distribution: (1 - s) * onehot + s / K.
  Returns a [B] tensor in the logits' dtype.
  """
  num_classes = tf.shape(logits)[-1]
  if label_smoothing:
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    return soft_cross_entropy(smooth_targets(targets, label_smoothing), logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def smooth_targets(targets: tf.Tensor, label_smoothing: float) -> tf.Tensor:
  """(1 - s) * q + s / K for a target distribution q over K classes (the official code smooths soft targets too)."""
  if not label_smoothing:
    return targets
  num_classes = tf.cast(tf.shape(targets)[-1], targets.dtype)
  return targets * (1.0 - label_smoothing) + label_smoothing / num_classes


def soft_cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-example CE(q, softmax(logits)) = -sum_k q_k log p_k for a target distribution q.

  Gradients flow into both `targets` and `logits`: the exact soft-label meta-gradient needs the former.
  """
  return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def pseudo_labels(teacher_logits: tf.Tensor, mode: str, seed: tf.Tensor) -> tf.Tensor:
  """Hard pseudo labels from the teacher's logits on the unlabeled batch.

  `sample` draws y_hat ~ softmax(T(x_u)) as in the paper (Algorithm 1), which keeps the score-function
  estimator of Appendix A unbiased; `argmax` is the biased, deterministic variant used by some ports.
  `seed` is a stateless seed (shape [2]) so that a run is reproducible and resumable from the step alone.
  Returns int32 labels of shape [B]; no gradient flows through them.
  """
  logits = tf.stop_gradient(teacher_logits)
  if mode == "argmax":
    return tf.argmax(logits, axis=-1, output_type=tf.int32)
  if mode == "sample":
    draws = tf.random.stateless_categorical(logits, 1, seed=seed, dtype=tf.int32)
    return tf.squeeze(draws, axis=-1)
  raise ValueError(f"hard pseudo-label mode must be 'sample' or 'argmax', got {mode!r}")


def uda_consistency(logits_weak: tf.Tensor, logits_strong: tf.Tensor, temperature: float = 1.0,
                    threshold: float = 0.0) -> Tuple[tf.Tensor, tf.Tensor]:
  """UDA's consistency loss (Xie et al. 2020), as the MPL teacher's auxiliary objective.

  The target is the sharpened, stop-gradient prediction on the weak view, softmax(z_weak / temperature);
  examples whose sharpened confidence is below `threshold` are masked out. As in the official MPL code the
  masked sum is divided by the whole unlabeled batch, not by the number kept.
  Returns (loss, mask_ratio), both scalars.
  """
  targets = tf.stop_gradient(tf.nn.softmax(logits_weak / temperature, axis=-1))
  mask = tf.cast(tf.reduce_max(targets, axis=-1) >= threshold, logits_strong.dtype)
  loss = tf.reduce_mean(mask * soft_cross_entropy(targets, logits_strong))
  return loss, tf.reduce_mean(mask)


def feedback_from_losses(loss_before: tf.Tensor, loss_after: tf.Tensor) -> tf.Tensor:
  """The student's feedback h = L_l(before) - L_l(after): old minus new, as a constant.

  h > 0 means the step lowered the student's labeled loss (the label helped); the popular ports use new - old
  (wrong sign). With `before` = the student's weights theta this is the paper's h (`loss_difference`); with
  `before` = theta + D0, the point the optimizer would have reached with a zero gradient, it is the label
  effect (`label_effect`, docs/feedback.md): the part of the step that the pseudo labels caused.
  """
  return tf.stop_gradient(loss_before - loss_after)


def feedback_dot_product(step_size: tf.Tensor, grads_labeled_after: Sequence[tf.Tensor],
                         grads_applied: Sequence[tf.Tensor]) -> tf.Tensor:
  """First-order label effect h = c * eta_S * grad L_l(theta_S')^T . g_hat (Appendix A's dot product).

  `step_size` is c * eta_S, the factor by which the optimizer's step moves with the applied (clipped) pseudo-label
  gradient g_hat: c = 1 + momentum under Nesterov SGD, 1 otherwise (`feedback.step_coefficient`). It is the
  Taylor expansion of L_l(theta + D0) - L_l(theta') at theta', so it agrees with `label_effect` for small steps.
  """
  dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grads_labeled_after, grads_applied) if b is not None])
  return tf.stop_gradient(tf.cast(step_size, dot.dtype) * dot)


def feedback_cosine(grads_labeled_after: Sequence[tf.Tensor], grads_applied: Sequence[tf.Tensor]) -> tf.Tensor:
  """h = cos(grad L_l(theta_S'), g_hat): the cosine similarity the paper's appendix names beside the dot product.

  The same two gradients as `feedback_dot_product`, so the same sign (h > 0 when a step along -g_hat lowers the
  labeled loss), but normalised: |h| <= 1 whatever the step size, the gradients' scale or the clipping, so h says
  in which direction the pseudo labels pushed the student, not how far. The norms run over all trainable
  variables; a None gradient (a variable the loss does not reach) counts as zeros. 0 when either norm is 0.
  Each division is by one norm (dot / |a| <= |b|), so a product of two tiny norms cannot underflow to 0; the clip
  to [-1, 1] only removes rounding.
  """
  def norm(grads):
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads if g is not None]))

  dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grads_labeled_after, grads_applied)
                  if a is not None and b is not None])
  cosine = tf.math.divide_no_nan(tf.math.divide_no_nan(dot, norm(grads_labeled_after)), norm(grads_applied))
  return tf.stop_gradient(tf.clip_by_value(cosine, -1.0, 1.0))


MPL_REDUCTIONS = ("mean", "sum")


def mpl_teacher_loss(advantage: tf.Tensor, pseudo_label: tf.Tensor, teacher_logits: tf.Tensor,
                     reduction: str = "mean") -> tf.Tensor:
  """Surrogate whose gradient is the teacher's MPL gradient for hard labels (Appendix A).

  grad_theta_T = (h - b) * grad_theta_T sum_i CE(y_hat_i, T(x_u_i; theta_T)), with y_hat the labels the student
  was trained on and h - b a constant. For the joint draw of the B_u labels of a batch, log p(y_hat) = -sum_i CE_i,
  so with `reduction='sum'` its expectation over y_hat is exactly the gradient of the expected labeled loss after
  the student's step (any h = const - L_l(theta'(y_hat)) with a label-independent const); `'mean'` (the official
  code's and the paper's form) is that gradient divided by B_u. Minimising it makes y_hat more likely when h > b
  (the label helped the student) and less likely when h < b.
  """
  if reduction not in MPL_REDUCTIONS:
    raise ValueError(f"mpl reduction must be one of {MPL_REDUCTIONS}, got {reduction!r}")
  ce = cross_entropy(pseudo_label, teacher_logits)
  reduced = tf.reduce_sum(ce) if reduction == "sum" else tf.reduce_mean(ce)
  return tf.stop_gradient(advantage) * reduced


def soft_meta_objective(step_size: tf.Tensor, grads_unlabeled: Sequence[tf.Tensor],
                        grads_labeled_after: Sequence[tf.Tensor]) -> tf.Tensor:
  """Surrogate for the exact one-step meta-gradient with soft pseudo labels (Eq. 3).

  The student's step is theta' = theta + D0 - c * eta_S * g_hat(theta_T), where D0 (momentum carry-over, weight
  decay) does not depend on the teacher and g_hat is the (clipped) pseudo-label gradient. So
  d/dtheta_T L_l(theta') = -c eta_S (d g_hat / d theta_T)^T v with v = grad L_l(theta_S') held constant, and the
  gradient of -c eta_S * g_hat . stop(v) with respect to theta_T is exactly that, provided g_hat was computed
  (clipping included) inside a tape that watches theta_T (nested tapes). `step_size` is c * eta_S.
  """
  dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(v))
                  for g, v in zip(grads_unlabeled, grads_labeled_after) if g is not None])
  return -tf.cast(step_size, dot.dtype) * dot


def moving_average(average: tf.Tensor, value: tf.Tensor, decay: float) -> tf.Tensor:
  """decay * average + (1 - decay) * value: the baseline b subtracted from h (official decay 0.99)."""
  return decay * average + (1.0 - decay) * tf.cast(value, average.dtype)


def ema_decay(decay: float, step: tf.Tensor) -> tf.Tensor:
  """Student EMA decay with the official warm-up, min(decay, (t + 1) / (t + 10))."""
  t = tf.cast(step, tf.float32)
  return tf.minimum(tf.constant(decay, tf.float32), (t + 1.0) / (t + 10.0))


def linear_ramp(step: tf.Tensor, ramp_steps: int) -> tf.Tensor:
  """min(1, step / ramp_steps); 1 from the start when ramp_steps is 0 (UDA weight ramp)."""
  if ramp_steps <= 0:
    return tf.constant(1.0, tf.float32)
  return tf.minimum(1.0, tf.cast(step, tf.float32) / float(ramp_steps))


def accuracy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Fraction of argmax predictions equal to the integer labels."""
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
  return tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32))
