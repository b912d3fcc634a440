"""The student's side of the feedback: which step its optimizer took, and how the labeled loss is measured.

The MPL teacher learns from what one student step on its pseudo labels did to the student's labeled loss. Two
things decide whether that signal measures the *labels* (docs/feedback.md has the derivation):

1. The step. With SGD (momentum mu, Nesterov or not), decoupled weight decay and gradient clipping, the student
   moves from theta to theta' = theta + D0 - c * eta * g_hat, where g_hat is the clipped pseudo-label gradient,
   c = 1 + mu under Nesterov and 1 otherwise, and D0 = mu^2 m - eta * wd * theta (Nesterov; mu m for heavy ball)
   is the step the optimizer would take with a zero gradient. D0 does not depend on the pseudo labels, so
   h = L_l(theta + D0) - L_l(theta') (`label_effect`) keeps the score-function estimator unbiased while dropping
   the momentum carry-over and decay that dominate the paper's h = L_l(theta) - L_l(theta') in real recipes.
   `step_coefficient` gives c for an optimizer, and refuses optimizers whose step is not of this form.
2. The loss. `labeled_loss` evaluates the student on the labeled batch in one of `BATCH_NORM_MODES`:
   'inference' (moving statistics, the caller keeps them fixed across the step) or 'train' (batch statistics of
   x_l alone, as the official code and MPL-pytorch do, but with dropout off so that two evaluations at the same
   weights agree exactly), always computed in full precision: under mixed_bfloat16 a bfloat16 difference of two
   nearly equal losses is mostly rounding.
`student_step` keeps batch-norm moving statistics out of the measurement
with `read_statistics` / `assign_statistics`, so h is exactly 0 when the student's learning rate is 0.
"""
import contextlib
from typing import Callable, List, NamedTuple, Optional

import tensorflow as tf

from mpl_tf import losses
from mpl_tf.keras import keras

BATCH_NORM_MODES = ("inference", "train")
# h: the label effect L(theta + D0) - L(theta'), the paper's L(theta) - L(theta'), the label effect's first-order
# form, or the cosine of the two gradients in it (|h| <= 1; docs/feedback.md).
FORMS = ("label_effect", "loss_difference", "dot_product", "cosine")


class StudentStep(NamedTuple):
  """The student's step on the pseudo labels and its labeled loss measured around it (`student_step`).

  `h` is the feedback (one of `FORMS`); `h_raw` = L(theta) - L(theta'); where the optimizer's
  step is known (`step_size` = c * eta), `h_label` = L(theta + D0) - L(theta') and `h_null` = L(theta) -
  L(theta + D0), else None. `stepped` is False after a step a loss-scale optimizer skipped."""
  h: tf.Tensor
  h_raw: tf.Tensor
  h_label: Optional[tf.Tensor]
  h_null: Optional[tf.Tensor]
  loss_u: tf.Tensor
  loss_before: tf.Tensor
  loss_after: tf.Tensor
  grads_u: list
  grads_after: Optional[list]
  step_size: Optional[tf.Tensor]
  stepped: tf.Tensor


def step_coefficient(optimizer: keras.optimizers.Optimizer) -> Optional[float]:
  """c such that the optimizer's step is D0 - c * lr * g for the gradient g it is given, or None if unknown.

  tf-keras SGD applies decoupled weight decay first (theta -= lr * wd * theta), then m <- mu m - lr g and
  theta += -lr g + mu m (Nesterov) or theta += m: linear in g with slope -(1 + mu) lr (Nesterov) or -lr. Other
  optimizers (Adam, RMSprop, an optimizer that clips or averages on its own) are not linear in g: None.
  """
  inner = getattr(optimizer, "inner_optimizer", optimizer)  # a mixed_float16 LossScaleOptimizer
  if type(inner) is not keras.optimizers.SGD:  # pylint: disable=unidiomatic-typecheck
    return None
  if any(getattr(inner, name, None) for name in ("clipnorm", "clipvalue", "global_clipnorm", "use_ema")):
    return None
  momentum = float(inner.momentum)
  return 1.0 + momentum if inner.nesterov else 1.0


def as_taken(optimizer: keras.optimizers.Optimizer, applied_grads):
  """(stepped, grads): whether `optimizer.apply_gradients(applied_grads)` moved the weights, and the gradients
  of the step it took.

  `stepped` is False only when a (mixed_float16) LossScaleOptimizer skipped the step because the gradients
  overflowed, as it does by design while it lowers its loss scale; the gradients are then zeros. The student did
  not move, so the feedback is exactly 0, and no inf reaches the null-step evaluation (c * eta * inf made h, and
  for good the moving baseline, NaN), the gradients' dot products or the teacher. Other optimizers: unchanged.
  """
  if not isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
    return tf.constant(True), applied_grads
  finite = [tf.reduce_all(tf.math.is_finite(g)) for g in applied_grads if g is not None]
  stepped = tf.reduce_all(tf.stack(finite)) if finite else tf.constant(True)
  return stepped, [None if g is None else tf.where(stepped, g, tf.zeros_like(g)) for g in applied_grads]


def _layers(network: keras.Model) -> List[keras.layers.Layer]:
  return list(network._flatten_layers(include_self=True, recursive=True))  # pylint: disable=protected-access


@contextlib.contextmanager
def measuring(network: keras.Model, batch_norm: str):
  """While open, `network` computes in its variables' dtype and, in 'train' mode, with dropout off.

  Both are trace-time switches of layer attributes (a Keras layer reads its dtype policy and a Dropout layer
  its rate when it is called), restored on exit, so the network is unchanged outside the measurement.
  Dropout layers with rate 0 pass their input through in training mode too.
  """
  changed = []
  for layer in _layers(network):
    policy = layer._dtype_policy  # pylint: disable=protected-access
    if policy.compute_dtype != policy.variable_dtype and policy.variable_dtype is not None:
      changed.append((layer, "_set_dtype_policy", policy))
      layer._set_dtype_policy(keras.mixed_precision.Policy(policy.variable_dtype))  # pylint: disable=protected-access
    if batch_norm == "train" and isinstance(layer, keras.layers.Dropout) and layer.rate:
      changed.append((layer, "rate", layer.rate))
      layer.rate = 0.0
  try:
    yield
  finally:
    for layer, attribute, value in reversed(changed):
      if attribute == "rate":
        layer.rate = value
      else:
        layer._set_dtype_policy(value)  # pylint: disable=protected-access


def labeled_loss(student: keras.Model, x_l: tf.Tensor, y_l: tf.Tensor, batch_norm: str) -> tf.Tensor:
  """Mean CE of the student on (x_l, y_l) as the feedback measures it (module doc), in float32 or wider.

  'train' mode runs batch norm on the statistics of x_l and updates the moving statistics as any training
  forward does: the caller restores them.
  """
  if batch_norm not in BATCH_NORM_MODES:
    raise ValueError(f"feedback_batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}")
  with measuring(student, batch_norm):
    logits = student(x_l, training=batch_norm == "train")
  if logits.dtype.size < 4:
    logits = tf.cast(logits, tf.float32)
  return tf.reduce_mean(losses.cross_entropy(y_l, logits))


def read_statistics(network: keras.Model) -> List[tf.Tensor]:
  """The current values of the network's non-trainable variables (batch-norm moving statistics)."""
  return [tf.identity(v) for v in network.non_trainable_variables]


def assign_statistics(network: keras.Model, values: List[tf.Tensor]) -> None:
  for variable, value in zip(network.non_trainable_variables, values):
    variable.assign(value)


def evaluate_at_null_step(student: keras.Model, applied_grads, step_size: tf.Tensor, measure):
  """`measure()` with the student's weights moved from theta' to theta + D0 = theta' + c * eta * g_hat.

  theta' is copied and put back exactly afterwards, so the student's trajectory does not change by a rounding
  error; at a zero learning rate theta + D0 is theta' bit for bit. `step_size` is c * eta.
  """
  variables = student.trainable_variables
  theta_after = [tf.identity(v) for v in variables]
  for variable, grad in zip(variables, applied_grads):
    if grad is not None:
      variable.assign_add(tf.cast(step_size, variable.dtype) * tf.cast(grad, variable.dtype))
  value = measure()
  for variable, value_after in zip(variables, theta_after):
    variable.assign(value_after)
  return value


def student_step(student: keras.Model, apply: Callable, optimizer: keras.optimizers.Optimizer, x_l, y_l, u,
                 targets, learning_rate, *, feedback: str, batch_norm: str, coefficient: Optional[float],
                 label_smoothing: float = 0.0, need_grads_after: bool = False) -> StudentStep:
  """One optimizer step of the student on (u, targets), with its labeled loss measured around it.

  `apply(tape, loss, variables)` takes the step (the model's clipping and loss scaling) and returns the
  gradients applied; `coefficient` is `step_coefficient(optimizer)`; `feedback` one of `FORMS`. The
  pseudo-label gradients `grads_u` are clipped as applied but not stopped, so that with soft targets the caller's
  tape can differentiate them; `grads_after` (the labeled loss's gradient at the updated weights) is taken when
  asked or when the feedback needs it.
  """
  variables = student.trainable_variables

  def measure():
    return labeled_loss(student, x_l, y_l, batch_norm)

  stats_before = read_statistics(student)
  loss_before = measure()
  if batch_norm == "train":  # a training-mode forward moved the moving statistics: only the student's step may
    assign_statistics(student, stats_before)
  with tf.GradientTape() as s_tape:
    s_logits_u = student(u, training=True)
    if targets.dtype.is_integer:
      loss_u = tf.reduce_mean(losses.cross_entropy(targets, s_logits_u, label_smoothing))
    else:
      smoothed = losses.smooth_targets(targets, label_smoothing)
      loss_u = tf.reduce_mean(losses.soft_cross_entropy(smoothed, s_logits_u))
  grads_u = apply(s_tape, loss_u, variables)
  # A step a loss-scale optimizer skipped (overflowed gradients) moved nothing: zeros stand for its gradients.
  stepped, grads_u = as_taken(optimizer, grads_u)
  applied = [None if g is None else tf.stop_gradient(g) for g in grads_u]

  # The losses after the step see the moving statistics of before it (inference mode) and leave them as the
  # student's step set them: the weight update is the only difference between the measurements.
  stats_after = read_statistics(student)
  if batch_norm == "inference":
    assign_statistics(student, stats_before)
  grads_after = None
  if need_grads_after or feedback in ("dot_product", "cosine"):
    with tf.GradientTape() as after_tape:
      loss_after = measure()
    grads_after = after_tape.gradient(loss_after, variables)
  else:
    loss_after = measure()
  step_size = h_label = h_null = None
  if coefficient is not None:
    step_size = tf.cast(coefficient, tf.float32) * learning_rate
    loss_null = evaluate_at_null_step(student, applied, step_size, measure)
    h_label = losses.feedback_from_losses(loss_null, loss_after)
    h_null = losses.feedback_from_losses(loss_before, loss_null)
  assign_statistics(student, stats_after)
  h_raw = losses.feedback_from_losses(loss_before, loss_after)
  if feedback == "dot_product":
    h = losses.feedback_dot_product(step_size, grads_after, applied)
  elif feedback == "cosine":
    h = losses.feedback_cosine(grads_after, applied)
  else:
    h = h_label if feedback == "label_effect" else h_raw
  return StudentStep(h=h, h_raw=h_raw, h_label=h_label, h_null=h_null, loss_u=loss_u, loss_before=loss_before,
                     loss_after=loss_after, grads_u=grads_u, grads_after=grads_after, step_size=step_size,
                     stepped=stepped)
