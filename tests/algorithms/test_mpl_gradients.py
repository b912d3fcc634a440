"""The teacher's update is the derivative the paper derives: checked exactly, in float64, on tiny networks.

The teacher's MPL gradient is read off the real `train_step`: with the teacher's supervised term off
(`teacher_supervised_weight=0`), no baseline on the first step, and teacher SGD at learning rate 1, the
teacher's weight change is minus its MPL gradient. The references are computed here from scratch.
"""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses
from mpl_tf.keras import keras
from tests.conftest import tiny_batch, tiny_mlp

ETA = 0.5  # the student's learning rate, large enough for the one-step effect to be far above round-off


def flat(variables):
  return np.concatenate([np.ravel(v.numpy()) for v in variables])


def finite_difference_gradient(variables, objective, eps=1e-6):
  """Central differences of `objective()` in every entry of `variables` (assigned in place; float64)."""
  theta = flat(variables)

  def at(values):
    offset = 0
    for v in variables:
      v.assign(values[offset:offset + v.shape.num_elements()].reshape(v.shape))
      offset += v.shape.num_elements()
    return objective()
  numeric = np.array([(at(theta + eps * e) - at(theta - eps * e)) / (2 * eps) for e in np.eye(theta.size)])
  at(theta)
  return numeric


def mpl_model(teacher_seed=1, student_seed=2, student_lr=ETA, **options):
  """A fresh MPL model on tiny networks whose teacher gradient equals minus the teacher's weight change."""
  options.setdefault("teacher_supervised_weight", 0.0)
  options.setdefault("baseline_decay", 0.0)
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(teacher_seed, name="teacher"),
                                student=tiny_mlp(student_seed, name="student"), **options)
  model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=keras.optimizers.SGD(student_lr))
  return model


def teacher_gradient_of_step(model, data):
  """Runs one real train_step eagerly and returns (teacher gradient, the step's metrics)."""
  before = flat(model.teacher.trainable_variables)
  metrics = model.train_step(data)
  return before - flat(model.teacher.trainable_variables), metrics


def one_step_labeled_loss(teacher, student, x_l, y_l, x_u, targets_fn, eta=ETA):
  """L_l(theta_S - eta grad_S L_u(theta_T, theta_S)), written out independently of the model code."""
  s_vars = student.trainable_variables
  with tf.GradientTape() as tape:
    targets = targets_fn(teacher(x_u, training=True))
    l_u = tf.reduce_mean(losses.soft_cross_entropy(targets, student(x_u, training=True)))
  grads = tape.gradient(l_u, s_vars)
  saved = [v.numpy() for v in s_vars]
  for v, g in zip(s_vars, grads):
    v.assign_sub(eta * g)
  l_l = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l, training=False))).numpy()
  for v, s in zip(s_vars, saved):
    v.assign(s)
  return l_l


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_soft_meta_gradient_matches_finite_differences(float64, tau):
  """With a label temperature the soft labels are softmax(T(x_u) / tau), and the meta-gradient runs through it."""
  x_l, y_l, x_u = tiny_batch()
  model = mpl_model(pseudo_labels="soft", label_temperature=tau)
  reference_teacher, reference_student = tiny_mlp(1), tiny_mlp(2)
  grad, _ = teacher_gradient_of_step(model, ((x_l, y_l), x_u))

  numeric = finite_difference_gradient(
      reference_teacher.trainable_variables,
      lambda: one_step_labeled_loss(reference_teacher, reference_student, x_l, y_l, x_u,
                                    lambda logits: tf.nn.softmax(logits / tau)))
  assert np.linalg.norm(numeric) > 1e-3, "the check is vacuous if the meta-gradient is ~0"
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)
  if tau != 1.0:  # the temperature changes the gradient well beyond the tolerance
    untempered, _ = teacher_gradient_of_step(mpl_model(pseudo_labels="soft"), ((x_l, y_l), x_u))
    assert np.linalg.norm(untempered - numeric) > 0.1 * np.linalg.norm(numeric)


def linear_teacher(kernel, bias):
  """z = x W + c, three classes over two inputs, with the given weights."""
  inputs = keras.Input((2,))
  teacher = keras.Model(inputs, keras.layers.Dense(3)(inputs), name="teacher")
  teacher.set_weights([np.array(kernel), np.array(bias)])
  return teacher


@pytest.mark.parametrize("mode", ["sample", "argmax"])
def test_label_temperature_draws_and_scores_the_label_under_softmax_of_the_logits_over_tau(float64, mode):
  """A linear teacher whose logits on x_u = [1, 0] are z = W[0] + c = [2 ln 3, 0, 0], tau = 2: the labels come
  from softmax(z / 2) = [3/5, 1/5, 1/5] (softmax(z) would be [9/11, 1/11, 1/11]), and the teacher's MPL
  gradient on z is h * d CE(y, z / 2) / dz = h * (softmax(z / 2) - onehot(y)) / 2, e.g. h * [-1/5, 1/10, 1/10]
  for y = 0 (tau = 1 would give h * [-2/11, 1/11, 1/11]). dz/dW is x in row 0 and 0 in row 1, dz/dc = 1."""
  x_l, y_l, _ = tiny_batch(seed=4)
  x_u = tf.constant([[1.0, 0.0]], tf.float64)
  teacher = linear_teacher([[2 * np.log(3.0), 0.0, 0.0], [0.3, -0.7, 0.2]], [0.0, 0.0, 0.0])
  model = MetaPseudoLabelsModel(teacher=teacher, student=tiny_mlp(2), pseudo_labels=mode, label_temperature=2.0,
                                teacher_supervised_weight=0.0, baseline_decay=0.0)
  model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=keras.optimizers.SGD(ETA))
  drawn, real_sampler = [], losses.pseudo_labels
  losses.pseudo_labels = lambda logits, m, seed: drawn.append((logits, real_sampler(logits, m, seed))) or drawn[-1][1]
  try:
    grad, metrics = teacher_gradient_of_step(model, ((x_l, y_l), x_u))
  finally:
    losses.pseudo_labels = real_sampler
  (logits, labels), = drawn
  np.testing.assert_allclose(logits.numpy(), [[np.log(3.0), 0.0, 0.0]], rtol=1e-12)
  y = int(labels.numpy()[0])
  assert y == 0 or mode == "sample"
  h = float(metrics["mpl/h"])
  assert abs(h) > 1e-4
  dz = h * (np.array([3 / 5, 1 / 5, 1 / 5]) - np.eye(3)[y]) / 2
  np.testing.assert_allclose(grad, np.concatenate([dz, np.zeros(3), dz]), rtol=1e-6, atol=1e-12)


def enumerate_expected_gradient(feedback, eta):
  """(sum over y_hat of p(y_hat) * teacher MPL gradient(y_hat), exact gradient of E[L_l after one step])."""
  x_l, y_l, x_u = tiny_batch(n_u=2)
  n_u = x_u.shape[0]
  teacher = tiny_mlp(1)
  t_vars = teacher.trainable_variables
  expected_estimate, exact = 0.0, 0.0
  for labels in itertools.product(range(3), repeat=n_u):
    labels_t = tf.constant(labels, tf.int32)
    model = mpl_model(feedback=feedback, student_lr=eta)
    real_sampler = losses.pseudo_labels
    losses.pseudo_labels = lambda logits, mode, seed, fixed=labels_t: fixed
    try:
      grad, metrics = teacher_gradient_of_step(model, ((x_l, y_l), x_u))
    finally:
      losses.pseudo_labels = real_sampler
    with tf.GradientTape() as tape:
      log_p = -tf.reduce_sum(losses.cross_entropy(labels_t, teacher(x_u, training=True)))
      p = tf.exp(log_p)
    grad_p = flat(tape.gradient(p, t_vars))
    loss_after = one_step_labeled_loss(teacher, tiny_mlp(2), x_l, y_l, x_u,
                                       lambda _, y=labels_t: tf.one_hot(y, 3, dtype=tf.float64), eta)
    expected_estimate = expected_estimate + p.numpy() * grad
    exact = exact + loss_after * grad_p
    assert float(metrics["mpl/h"]) != 0.0
  return expected_estimate, exact, n_u


def test_hard_label_estimator_is_unbiased_for_the_expected_one_step_loss(float64):
  """With h = old - new, E[h * grad CE(y_hat, T)] is exactly the exact gradient / |x_u| (Appendix A)."""
  estimate, exact, n_u = enumerate_expected_gradient("loss_difference", ETA)
  assert np.linalg.norm(exact) > 1e-4
  np.testing.assert_allclose(estimate * n_u, exact, rtol=1e-6, atol=1e-10)


def test_dot_product_feedback_points_along_the_exact_gradient_for_small_student_lr(float64):
  estimate, exact, _ = enumerate_expected_gradient("dot_product", 1e-3)
  cosine = estimate @ exact / (np.linalg.norm(estimate) * np.linalg.norm(exact))
  assert cosine > 0.99


def test_loss_difference_and_dot_product_feedback_agree_for_small_lr(float64):
  x_l, y_l, x_u = tiny_batch(seed=3)
  hs = {}
  for feedback in ("loss_difference", "dot_product"):
    model = mpl_model(feedback=feedback, student_lr=1e-3, pseudo_labels="argmax")
    hs[feedback] = float(model.train_step(((x_l, y_l), x_u))["mpl/h"])
  assert abs(hs["dot_product"]) > 1e-6
  assert hs["loss_difference"] == pytest.approx(hs["dot_product"], rel=1e-2)


def test_teacher_term_uses_the_students_label_and_has_nonzero_gradient(float64):
  """Recover the label the student trained on from its weight change; the teacher must be scored on it."""
  x_l, y_l, x_u = tiny_batch(seed=5, n_u=3)
  student_reference, teacher_reference = tiny_mlp(2), tiny_mlp(1)  # the models' initial weights
  candidates = list(itertools.product(range(3), repeat=3))
  student_steps = []
  for labels in candidates:
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(losses.cross_entropy(tf.constant(labels), student_reference(x_u, training=True)))
    student_steps.append(-ETA * flat(tape.gradient(loss, student_reference.trainable_variables)))
  seen = set()
  for seed in range(6):  # several sampled draws, not just the argmax
    model = mpl_model(seed=seed)
    s_before = flat(model.student.trainable_variables)
    grad, metrics = teacher_gradient_of_step(model, ((x_l, y_l), x_u))
    s_delta = flat(model.student.trainable_variables) - s_before
    matches = [c for c, step in zip(candidates, student_steps) if np.allclose(step, s_delta, atol=1e-12)]
    assert len(matches) == 1, matches
    seen.add(matches[0])
    with tf.GradientTape() as tape:
      ce = tf.reduce_mean(losses.cross_entropy(tf.constant(matches[0]), teacher_reference(x_u, training=True)))
    expected = float(metrics["mpl/h"]) * flat(tape.gradient(ce, teacher_reference.trainable_variables))
    assert np.linalg.norm(grad) > 1e-6, "the teacher's MPL term must move the teacher"
    # h is read back through a float32 metric, hence 1e-6 and not float64 round-off. A different label
    # (e.g. the strong view's argmax, MPL-pytorch's mismatch) would change the gradient at order 1.
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-12)
  assert len(seen) > 1, "sampling should produce different labels across seeds"
