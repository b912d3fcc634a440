"""The math of Meta Pseudo Labels and its baselines, as pure functions of tensors.

Equation numbers refer to the paper (Pham et al., "Meta Pseudo Labels", CVPR 2021, arXiv 2003.10580):
Eq. 1 is the student's pseudo-label objective L_u, Eq. 2/3 the teacher's one-step meta objective
L_l(theta_S - eta_S * grad L_u(theta_T, theta_S)), Appendix A the score-function (REINFORCE) gradient for
hard pseudo labels. `../shared/REFERENCE.md` lists the defects of public code that these functions avoid:
the teacher term here always has a non-zero gradient, h is old - new, and the teacher is scored on the very
label the student trained on.

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
    targets = targets * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)
    return soft_cross_entropy(targets, logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


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
  """The student's feedback h = L_l(theta_S) - L_l(theta_S'): old minus new.

  First-order Taylor expansion of the dot product of Appendix A: h > 0 means the student's step on the
  pseudo labels lowered its labeled loss (the label helped). The popular ports use new - old (wrong sign).
  """
  return tf.stop_gradient(loss_before - loss_after)


def feedback_dot_product(learning_rate: tf.Tensor, grads_labeled_after: Sequence[tf.Tensor],
                         grads_unlabeled: Sequence[tf.Tensor]) -> tf.Tensor:
  """The paper's exact form h = eta_S * grad L_l(theta_S')^T . grad L_u(theta_T, theta_S) (Appendix A)."""
  dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grads_labeled_after, grads_unlabeled)])
  return tf.stop_gradient(tf.cast(learning_rate, dot.dtype) * dot)


def mpl_teacher_loss(advantage: tf.Tensor, pseudo_label: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
  """Surrogate whose gradient is the teacher's MPL gradient for hard labels (Appendix A).

  grad_theta_T = (h - b) * grad_theta_T CE(y_hat, T(x_u; theta_T)), with y_hat the label the student was
  trained on and h - b treated as a constant. Minimising it makes y_hat more likely when h > b (the label
  helped the student) and less likely when h < b. With a batch-mean CE the estimate is the exact gradient of
  the expected one-step labeled loss divided by the unlabeled batch size (a constant rescaling).
  """
  return tf.stop_gradient(advantage) * tf.reduce_mean(cross_entropy(pseudo_label, teacher_logits))


def soft_meta_objective(learning_rate: tf.Tensor, grads_unlabeled: Sequence[tf.Tensor],
                        grads_labeled_after: Sequence[tf.Tensor]) -> tf.Tensor:
  """Surrogate for the exact one-step meta-gradient with soft pseudo labels (Eq. 3).

  d/dtheta_T L_l(theta_S - eta_S g_u(theta_T)) = -eta_S (d g_u / d theta_T)^T v, with v = grad L_l(theta_S')
  held constant. Taking the gradient of -eta_S * g_u . stop(v) with respect to theta_T gives exactly that,
  provided g_u was computed inside a tape that watches theta_T (nested tapes).
  """
  dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(v)) for g, v in zip(grads_unlabeled, grads_labeled_after)])
  return -tf.cast(learning_rate, dot.dtype) * dot


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
