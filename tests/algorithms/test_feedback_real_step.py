"""The teacher's update follows the student's *real* optimizer step, exactly, in float64 on tiny networks.

The student here has batch norm and trains with Nesterov momentum, decoupled weight decay, gradient clipping and
label smoothing, and every check starts from a state where momentum has built up over a few steps: the regime of
the paper's recipes, where a plain-SGD check would not see a wrong step coefficient, a wrong view or a missing
smoothing. The references are computed here with the optimizer itself (its real `apply_gradients`), not with
the model's code.
"""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses
from mpl_tf.algorithms import feedback
from mpl_tf.keras import keras
from tests.conftest import tiny_batch, tiny_mlp

ETA, MOMENTUM, DECAY, CLIP, SMOOTHING = 0.3, 0.9, 0.05, 0.4, 0.1
# The MPL term's weight: the teacher's update is read off its weights (SGD at lr 1), divided by this; small
# enough that the global-norm clip, which applies to the teacher too, never touches it.
WEIGHT = 1e-3
WARMUP = ((0, 1, 2), (2, 2, 0), (1, 0, 1))  # forced pseudo labels of the steps that build the momentum up


def bn_student(seed=2):
  """Dense -> batch norm -> tanh -> Dense: batch norm is what makes the measurement mode matter."""
  init = keras.initializers.RandomUniform(-0.8, 0.8, seed=seed)
  inputs = keras.Input((2,))
  x = keras.layers.Dense(4, kernel_initializer=init, bias_initializer=init)(inputs)
  x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
  x = keras.layers.Activation("tanh")(x)
  outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomUniform(-0.8, 0.8, seed=seed + 1))(x)
  return keras.Model(inputs, outputs)


def student_optimizer(learning_rate=ETA):
  opt = keras.optimizers.SGD(learning_rate, momentum=MOMENTUM, nesterov=True, weight_decay=DECAY)
  opt.exclude_from_weight_decay(var_names=["bn"])
  return opt


def flat(variables):
  return np.concatenate([np.ravel(v.numpy()) for v in variables])


class Forced:
  """Replaces the pseudo-label sampler by fixed labels while open."""

  def __init__(self, labels):
    self.labels = tf.constant(labels, tf.int32)

  def __enter__(self):
    self.real = losses.pseudo_labels
    losses.pseudo_labels = lambda logits, mode, seed: self.labels
    return self

  def __exit__(self, *exc):
    losses.pseudo_labels = self.real


def warmed_up_model(data, learning_rate=ETA, clip=CLIP, **options):
  """An MPL model after the WARMUP steps: momentum, batch-norm statistics and teacher have moved."""
  options.setdefault("teacher_supervised_weight", 0.0)
  options.setdefault("baseline_decay", 0.0)
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1, name="teacher"), student=bn_student(), mpl_weight=WEIGHT,
                                student_label_smoothing=SMOOTHING, grad_clip_norm=clip, **options)
  model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=student_optimizer(learning_rate))
  for labels in WARMUP:
    with Forced(labels):
      model.train_step(data)
  return model


def snapshot(model):
  variables = (list(model.variables) + model.teacher_optimizer.variables()
               + model.student_optimizer.variables())
  values = [v.numpy() for v in variables]

  def restore():
    for v, value in zip(variables, values):
      v.assign(value)
    model.reset_metrics()
  return restore


def labeled_loss_after_real_step(model, data, targets, mode):
  """L_l(theta') with theta' from the student optimizer's own apply_gradients (the model's code not used);
  with two unlabeled views the student trains on the strong one."""
  (x_l, y_l), x_u = data
  x_u = x_u[1] if isinstance(x_u, tuple) else x_u
  student = model.student
  stats = [v.numpy() for v in student.non_trainable_variables]
  with tf.GradientTape() as tape:
    logits = student(x_u, training=True)
    if targets.dtype.is_integer:
      loss = tf.reduce_mean(losses.cross_entropy(targets, logits, SMOOTHING))
    else:
      loss = tf.reduce_mean(losses.soft_cross_entropy(targets * (1 - SMOOTHING) + SMOOTHING / 3, logits))
  grads, norm = tf.clip_by_global_norm(tape.gradient(loss, student.trainable_variables), model.grad_clip_norm)
  model.student_optimizer.apply_gradients(zip(grads, student.trainable_variables))
  for v, value in zip(student.non_trainable_variables, stats):
    v.assign(value)
  after = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=mode == "train")))
  return after.numpy(), norm.numpy()


def enumerate_estimator(feedback_mode, batch_norm, reduction, learning_rate=ETA, label_view=None, tau=1.0):
  """Over all 27 labelings of 3 unlabeled points, from one warmed-up state: the estimator's mean and
  covariance trace, the exact gradient of E[L_l(theta'(y_hat))], and the step's metrics.

  label_view: None, one unlabeled view; 'weak' or 'strong', two views of different points, the student training
  on the strong one and its labels drawn from the teacher on `label_view`. tau: the label temperature, labels
  drawn from softmax(T / tau).
  """
  x_l, y_l, x_u = tiny_batch(seed=4, n_u=3)
  data, x_label = ((x_l, y_l), x_u), x_u
  options = dict(label_temperature=tau)
  if label_view:
    x_strong = tiny_batch(seed=8, n_u=3)[2]
    data, x_label = ((x_l, y_l), (x_u, x_strong)), {"weak": x_u, "strong": x_strong}[label_view]
    options.update(student_view="strong", pseudo_label_view=label_view)
  model = warmed_up_model(data, learning_rate, feedback=feedback_mode, feedback_batch_norm=batch_norm,
                          mpl_reduction=reduction, **options)
  restore = snapshot(model)
  t_vars = model.teacher.trainable_variables
  grads, probs, exact, metrics, norms = [], [], 0.0, [], []
  for labels in itertools.product(range(3), repeat=3):
    restore()
    before = flat(t_vars)
    with Forced(labels):
      metrics.append({k: float(v) for k, v in model.train_step(data).items()})
    grads.append((before - flat(t_vars)) / WEIGHT)  # teacher SGD at lr 1, no other term: minus its gradient
    restore()
    with tf.GradientTape() as tape:
      logits = model.teacher(x_label, training=True) / tau
      p = tf.exp(-tf.reduce_sum(losses.cross_entropy(tf.constant(labels), logits)))
    grad_p = flat(tape.gradient(p, t_vars))
    loss_after, norm = labeled_loss_after_real_step(model, data, tf.constant(labels, tf.int32), batch_norm)
    exact = exact + loss_after * grad_p
    probs.append(p.numpy())
    norms.append(norm)
  grads, probs = np.array(grads), np.array(probs)
  assert probs.sum() == pytest.approx(1.0, rel=1e-9)
  assert min(norms) > CLIP, "clipping must be active in the student's step for the check to cover it"
  assert max(WEIGHT * np.linalg.norm(g) for g in grads) < CLIP, "the teacher's update must not be clipped"
  mean = probs @ grads
  variance = float(probs @ np.sum((grads - mean) ** 2, axis=1))
  return mean, variance, exact, metrics


@pytest.mark.parametrize("feedback_mode, batch_norm", [
    ("label_effect", "train"), ("label_effect", "inference"), ("loss_difference", "train")])
def test_hard_label_estimator_is_the_exact_gradient_of_the_expected_loss_after_the_real_step(
    float64, feedback_mode, batch_norm):
  """E over y_hat of the teacher's update (sum reduction) == d/dtheta_T E[L_l(theta'(y_hat))], exactly."""
  mean, _, exact, metrics = enumerate_estimator(feedback_mode, batch_norm, "sum")
  assert np.linalg.norm(exact) > 1e-4
  assert min(abs(m["mpl/h_null"]) for m in metrics) > 1e-3, "momentum and decay must have built up"
  np.testing.assert_allclose(mean, exact, rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize("label_view", ["weak", "strong"])
def test_with_two_views_the_estimator_is_exact_for_labels_drawn_from_either_view(float64, label_view):
  """The student trains on the strong view; its labels come from the teacher on `label_view`: the expected
  update is the gradient of E_{y_hat ~ T(label view)}[L_l(theta'(y_hat, strong view))]."""
  mean, _, exact, _ = enumerate_estimator("label_effect", "train", "sum", label_view=label_view)
  assert np.linalg.norm(exact) > 1e-4
  np.testing.assert_allclose(mean, exact, rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_with_a_label_temperature_the_estimator_is_exact_for_labels_drawn_from_the_tempered_teacher(float64, tau):
  """y_hat ~ softmax(T(x_u) / tau), scored as CE(y_hat, T(x_u) / tau): the expected update is the gradient of
  E[L_l(theta'(y_hat))] under the tempered distribution (a score taken at tau = 1 would miss it)."""
  mean, _, exact, _ = enumerate_estimator("label_effect", "train", "sum", tau=tau)
  assert np.linalg.norm(exact) > 1e-4
  np.testing.assert_allclose(mean, exact, rtol=1e-6, atol=1e-11)


def test_mean_reduction_is_the_sum_over_the_unlabeled_batch_size(float64):
  mean, _, exact, _ = enumerate_estimator("label_effect", "train", "mean")
  np.testing.assert_allclose(mean * 3, exact, rtol=1e-6, atol=1e-11)


def later_smaller_rate(rate):
  """ETA while the momentum builds up (WARMUP), then `rate`: the momentum of the big steps carries on."""
  return keras.optimizers.schedules.PiecewiseConstantDecay([len(WARMUP) - 1], [ETA, rate])


def test_label_effect_removes_a_label_independent_part_and_lowers_the_estimators_variance(float64):
  """Where the carried momentum dominates h (a smaller rate after bigger steps, as under a decaying schedule)."""
  _, var_label, _, metrics = enumerate_estimator("label_effect", "train", "sum", later_smaller_rate(0.02))
  _, var_raw, _, _ = enumerate_estimator("loss_difference", "train", "sum", later_smaller_rate(0.02))
  nulls = [m["mpl/h_raw"] - m["mpl/h_label"] for m in metrics]
  # h_raw - h_label = h_null is the same for every labeling (it is the optimizer's, not the labels')...
  np.testing.assert_allclose(nulls, nulls[0], rtol=1e-6)
  np.testing.assert_allclose([m["mpl/h_null"] for m in metrics], nulls[0], rtol=1e-6)
  spread = np.std([m["mpl/h_label"] for m in metrics])
  assert abs(nulls[0]) > 3 * spread, "the check needs a state where momentum dominates h"
  # ... and multiplies a zero-mean score, adding variance and nothing else.
  assert var_label < 0.5 * var_raw, (var_label, var_raw)


def real_step_objective(model, data, restore):
  """theta_T -> L_l after the real optimizer step on the teacher's smoothed soft labels (the exact objective),
  and the norm of the student's gradient before clipping."""
  def objective():
    restore()
    targets = tf.nn.softmax(model.teacher(data[1], training=True))
    return labeled_loss_after_real_step(model, data, targets, model.feedback_batch_norm)
  return objective


def test_soft_meta_gradient_matches_finite_differences_through_the_real_step(float64):
  """Nesterov factor, clipping (differentiated through), decay, momentum and smoothing all in the reference."""
  x_l, y_l, x_u = tiny_batch(seed=6, n_u=3)
  data = ((x_l, y_l), x_u)
  model = warmed_up_model(data, pseudo_labels="soft", clip=0.03)  # soft-label gradients are small: clip binds
  restore = snapshot(model)
  assert real_step_objective(model, data, restore)()[1] > model.grad_clip_norm
  restore()
  t_vars = model.teacher.trainable_variables
  theta = flat(t_vars)
  model.train_step(data)
  grad = (theta - flat(t_vars)) / WEIGHT
  objective = real_step_objective(model, data, restore)
  numeric, eps = [], 1e-6
  for i in range(theta.size):
    values = []
    for sign in (1, -1):
      restore()
      point = theta.copy()
      point[i] += sign * eps
      offset = 0
      for v in t_vars:
        v.assign(point[offset:offset + v.shape.num_elements()].reshape(v.shape))
        offset += v.shape.num_elements()
      snapshot_at_point = snapshot(model)  # the objective restores everything but the perturbed teacher
      values.append(real_step_objective(model, data, snapshot_at_point)()[0])
    numeric.append((values[0] - values[1]) / (2 * eps))
  restore()
  assert np.linalg.norm(numeric) > 1e-4
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def null_step_reference(model, data, labels):
  """h_label from the optimizer itself: L_l after its step with a zero gradient minus after the real one."""
  restore = snapshot(model)
  (x_l, y_l), _ = data
  student, after = model.student, {}
  for name, targets in (("zero", None), ("real", tf.constant(labels, tf.int32))):
    restore()
    if targets is None:
      stats = [v.numpy() for v in student.non_trainable_variables]
      zeros = [tf.zeros_like(v) for v in student.trainable_variables]
      model.student_optimizer.apply_gradients(zip(zeros, student.trainable_variables))
      for v, value in zip(student.non_trainable_variables, stats):
        v.assign(value)  # as the real step's forward on x_u moves them, they must not count: put them back
      after[name] = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=True))).numpy()
    else:
      after[name] = labeled_loss_after_real_step(model, data, targets, "train")[0]
  restore()
  return after["zero"] - after["real"]


def test_label_effect_is_measured_from_the_optimizers_own_zero_gradient_step(float64):
  """theta + D0 is where tf-keras SGD goes with a zero gradient (Nesterov, decay, momentum built up), and at a
  small rate the dot product (with the Nesterov factor 1 + mu) is its first-order form; eta * g . v (no
  factor) would be off by 1.9x, and the raw loss difference is dominated by the momentum of earlier steps."""
  x_l, y_l, x_u = tiny_batch(seed=8, n_u=3)
  data, labels = ((x_l, y_l), x_u), (1, 0, 2)
  values = {}
  for mode, rate in (("label_effect", ETA), ("label_effect", 1e-4), ("dot_product", 1e-4)):
    model = warmed_up_model(data, learning_rate=later_smaller_rate(rate), feedback=mode)
    reference = null_step_reference(model, data, labels)
    model.reset_metrics()
    with Forced(labels):
      values[mode, rate] = {k: float(v) for k, v in model.train_step(data).items()}
    if mode == "label_effect":
      assert values[mode, rate]["mpl/h"] == pytest.approx(reference, rel=1e-7)
  label, dot = values["label_effect", 1e-4]["mpl/h"], values["dot_product", 1e-4]["mpl/h"]
  assert abs(label) > 1e-7
  assert dot == pytest.approx(label, rel=1e-3)
  assert abs(values["label_effect", 1e-4]["mpl/h_raw"] - label) > 10 * abs(label)
  assert dot / (1 + MOMENTUM) != pytest.approx(label, rel=0.2)


@pytest.mark.parametrize("nesterov, momentum, decay", [(True, 0.9, 0.01), (False, 0.9, 0.0), (False, 0.0, 0.1)])
def test_step_coefficient_is_the_slope_of_tf_keras_sgd_in_the_gradient(nesterov, momentum, decay):
  """From one optimizer state, the step with g minus the step with 0 is -c * lr * g."""
  opt = keras.optimizers.SGD(0.1, momentum=momentum, nesterov=nesterov, weight_decay=decay or None)
  var = tf.Variable([1.0, -2.0])
  for g in ([0.5, 0.2], [-0.3, 0.4]):  # momentum built up
    opt.apply_gradients([(tf.constant(g), var)])
  state = [v.numpy() for v in opt.variables()] + [var.numpy()]
  steps = []
  for g in ([0.0, 0.0], [0.7, -1.1]):
    for v, value in zip(opt.variables() + [var], state):
      v.assign(value)
    opt.apply_gradients([(tf.constant(g), var)])
    steps.append(var.numpy() - state[-1])
  c = feedback.step_coefficient(opt)
  assert c == pytest.approx(1 + momentum if nesterov else 1.0)
  np.testing.assert_allclose(steps[1] - steps[0], -c * 0.1 * np.array([0.7, -1.1]), rtol=1e-5)
  assert feedback.step_coefficient(keras.optimizers.Adam(0.1)) is None
  assert feedback.step_coefficient(keras.optimizers.SGD(0.1, global_clipnorm=1.0)) is None
