"""How the feedback is measured: exactly 0 without a step, batch norm and dropout kept out, the student's view,
label smoothing and full precision, each checked against a reference computed here."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses, schedules
from mpl_tf.algorithms.uda import UDASettings
from mpl_tf.keras import keras
from tests.conftest import tiny_batch, tiny_mlp


def noisy_student(seed=2, dropout=0.5):
  """A student with batch norm and dropout: the two things that bias h in public implementations."""
  inputs = keras.Input((2,))
  x = keras.layers.Dense(16, kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
  x = keras.layers.BatchNormalization(momentum=0.5)(x)
  x = keras.layers.Activation("relu")(x)
  x = keras.layers.Dropout(dropout, seed=seed)(x)
  outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
  return keras.Model(inputs, outputs)


def sgd(learning_rate):
  return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=1e-2)


# 'cosine' is not among them: it does not scale with the step, so it is not 0 at rate 0 (tested on its own below).
MODES = [(f, bn) for f in ("label_effect", "loss_difference", "dot_product") for bn in ("train", "inference")]


@pytest.mark.parametrize("feedback, batch_norm", MODES)
def test_h_is_exactly_zero_while_the_student_waits_in_every_mode(feedback, batch_norm):
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=16)
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=noisy_student(),
                                feedback=feedback, feedback_batch_norm=batch_norm)
  # The wait is the student's schedule's: rate 0 for 2 steps (mpl.student_wait_steps in a run).
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1),
                student_optimizer=sgd(schedules.Delayed(0.5, 2)))
  step = tf.function(model.train_step)
  trainable = [v.numpy() for v in model.student.trainable_variables]
  bn_stats = [v.numpy() for v in model.student.non_trainable_variables]
  for _ in range(2):
    model.reset_metrics()
    metrics = step(((x_l, y_l), x_u))
    assert float(metrics["mpl/h"]) == 0.0 and float(metrics["mpl/h_raw"]) == 0.0
    assert float(metrics["lr/student"]) == 0.0
  for before, var in zip(trainable, model.student.trainable_variables):
    np.testing.assert_array_equal(before, var.numpy())
  # the student did run in training mode: its batch-norm statistics moved, yet h stayed exactly 0
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(bn_stats, model.student.non_trainable_variables))
  model.reset_metrics()
  assert float(step(((x_l, y_l), x_u))["mpl/h"]) != 0.0, "after the wait the student learns and h moves"


def first_sgd_step_gradients(x_l, y_l, x_u, y_hat, eta):
  """(grad L_l(theta'), g) flattened, for the plain-SGD first step theta' = theta - eta g of a fresh tiny_mlp(2)
  student on (x_u, y_hat), written out here."""
  student = tiny_mlp(2)
  with tf.GradientTape() as tape:
    loss_u = tf.reduce_mean(losses.cross_entropy(y_hat, student(x_u)))
  grads = tape.gradient(loss_u, student.trainable_variables)
  for variable, grad in zip(student.trainable_variables, grads):
    variable.assign_sub(eta * grad)
  with tf.GradientTape() as tape:
    loss_l = tf.reduce_mean(losses.cross_entropy(y_l, student(x_l)))
  flat = lambda gs: np.concatenate([g.numpy().ravel() for g in gs])  # noqa: E731
  return flat(tape.gradient(loss_l, student.trainable_variables)), flat(grads)


def test_cosine_feedback_is_the_cosine_of_the_two_gradients_and_does_not_scale_with_the_step(float64):
  """h = cos(grad L_l(theta'), g_hat): at rate 0 (theta' = theta) the student does not move and the loss
  differences are 0, but h is the gradients' cosine, not 0; as the rate grows from 0 it moves only as theta'
  does, while the dot product grows with the step. Same first step, reference computed here."""
  x_l, y_l, x_u = tiny_batch(seed=3, n_u=4)
  y_hat = tf.argmax(tiny_mlp(1)(x_u), -1)  # the teacher's argmax labels, before its update
  hs = {}
  for feedback in ("cosine", "dot_product"):
    for eta in (0.0, 1e-3, 0.5):
      model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), pseudo_labels="argmax",
                                    feedback=feedback)
      model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(eta))
      metrics = model.train_step(((x_l, y_l), x_u))
      hs[feedback, eta] = float(metrics["mpl/h"])
      if eta == 0.0:
        assert float(metrics["mpl/h_raw"]) == 0.0
  for eta in (0.0, 1e-3, 0.5):
    after, g = first_sgd_step_gradients(x_l, y_l, x_u, y_hat, eta)
    assert hs["cosine", eta] == pytest.approx(after @ g / (np.linalg.norm(after) * np.linalg.norm(g)), rel=1e-6)
    assert hs["dot_product", eta] == pytest.approx(eta * after @ g, rel=1e-6)
    if eta:
      assert np.sign(hs["cosine", eta]) == np.sign(hs["dot_product", eta])
  assert abs(hs["cosine", 0.0]) > 0.1 and hs["dot_product", 0.0] == 0.0
  assert hs["cosine", 1e-3] == pytest.approx(hs["cosine", 0.0], rel=1e-2)  # theta' moved by O(eta) only
  assert abs(hs["dot_product", 1e-3]) < 1e-2 * abs(hs["dot_product", 0.5])


@pytest.mark.parametrize("batch_norm", ["train", "inference"])
def test_cosine_feedback_has_the_sign_of_the_dot_product_and_is_at_most_one(float64, batch_norm):
  """Every labeling of two points, one Nesterov step with weight decay (and batch norm) each: cos and dot
  product agree in sign, both signs occur, |h| <= 1, and h is not the dot product times one constant (their
  ratio, c * eta * |grad L_l(theta')| * |g_hat|, changes with the labels)."""
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=2, seed=6)
  hs = {"cosine": [], "dot_product": []}
  for labels in itertools.product(range(3), repeat=2):
    for feedback, values in hs.items():
      model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=noisy_student(dropout=0.0), feedback=feedback,
                                    feedback_batch_norm=batch_norm)
      model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=sgd(0.1))
      real = losses.pseudo_labels
      losses.pseudo_labels = lambda logits, mode, seed, fixed=tf.constant(labels): fixed
      try:
        values.append(float(model.train_step(((x_l, y_l), x_u))["mpl/h"]))
      finally:
        losses.pseudo_labels = real
  cosine, dot = np.array(hs["cosine"]), np.array(hs["dot_product"])
  np.testing.assert_array_equal(np.sign(cosine), np.sign(dot))
  assert cosine.min() < 0 < cosine.max()
  assert np.abs(cosine).max() <= 1.0
  assert np.std(dot / cosine) > 0.1 * np.mean(dot / cosine)


@pytest.mark.parametrize("batch_norm", ["train", "inference"])
def test_label_effect_is_exactly_zero_at_rate_zero_even_after_momentum_has_built_up(batch_norm):
  """The raw loss difference then measures the momentum carry-over (not 0); the label effect is 0."""
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=16)
  rate = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.5, 0.0])  # 3 steps at 0.5, then 0
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=noisy_student(), feedback="label_effect",
                                feedback_batch_norm=batch_norm)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=sgd(rate))
  step = tf.function(model.train_step)
  for _ in range(3):
    step(((x_l, y_l), x_u))
  for _ in range(2):
    model.reset_metrics()
    metrics = step(((x_l, y_l), x_u))
    assert float(metrics["lr/student"]) == 0.0
    assert float(metrics["mpl/h"]) == 0.0 and float(metrics["mpl/h_label"]) == 0.0
    assert abs(float(metrics["mpl/h_raw"])) > 1e-5, "momentum still moves the weights at rate 0"
    assert float(metrics["mpl/h_null"]) == float(metrics["mpl/h_raw"])


def test_train_mode_uses_the_batch_statistics_of_x_l_with_dropout_off_and_leaves_moving_statistics_alone():
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=16, seed=3)
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=noisy_student(), feedback_batch_norm="train",
                                pseudo_labels="argmax")
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=sgd(0.5))
  reference = noisy_student(dropout=0.0)
  reference.set_weights(model.student.get_weights())
  expected_loss = tf.reduce_mean(losses.cross_entropy(y_l, reference(x_l, training=True))).numpy()
  reference.set_weights(model.student.get_weights())
  reference(x_u, training=True)  # the one forward that may move the moving statistics: the student's on x_u
  metrics = model.train_step(((x_l, y_l), x_u))
  assert float(metrics["student/labeled_loss"]) == pytest.approx(expected_loss, rel=1e-6)
  for got, want in zip(model.student.non_trainable_variables, reference.non_trainable_variables):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
  assert model.student.layers[4].rate == 0.5, "dropout is restored after the measurement"


class Recorder:
  """Wraps the pseudo-label sampler and records the logits it was given."""

  def __enter__(self):
    self.real, self.logits = losses.pseudo_labels, []
    losses.pseudo_labels = lambda logits, mode, seed: (self.logits.append(logits), self.real(logits, mode, seed))[1]
    return self

  def __exit__(self, *exc):
    losses.pseudo_labels = self.real


@pytest.mark.parametrize("student_view, label_view, uda_weight", [
    ("strong", None, 0.0), ("strong", None, 1.0), ("weak", None, 1.0),
    ("strong", "weak", 0.0), ("strong", "weak", 1.0), ("weak", "strong", 1.0)])
def test_the_label_is_scored_on_the_view_it_was_drawn_from_and_the_student_trains_on_its_own(
    float64, student_view, label_view, uda_weight):
  """Two views of different images: the label is drawn from, and the teacher scored on, `pseudo_label_view`
  (by default the student's view); the student's loss is on the student's view with that label."""
  x_l, y_l, u_weak = tiny_batch(seed=5, n_u=4)
  u_strong = tiny_batch(seed=9, n_u=4)[2]
  teacher, reference = tiny_mlp(1), tiny_mlp(1)
  model = MetaPseudoLabelsModel(teacher=teacher, student=tiny_mlp(2), teacher_supervised_weight=0.0,
                                baseline_decay=0.0, uda=UDASettings(weight=uda_weight), student_view=student_view,
                                pseudo_label_view=label_view, pseudo_labels="argmax")
  model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=keras.optimizers.SGD(0.5))
  views = {"strong": u_strong, "weak": u_weak}
  view = views[label_view or student_view]
  other = views["weak" if view is u_strong else "strong"]
  before = [v.numpy() for v in teacher.trainable_variables]
  with Recorder() as recorded:
    metrics = model.train_step(((x_l, y_l), (u_weak, u_strong)))
  np.testing.assert_allclose(recorded.logits[0].numpy(), reference(view).numpy(), rtol=1e-12)
  y_hat = tf.argmax(reference(view), -1)
  def student_loss(student_input):  # metrics are float32 means: compare at float32 precision
    return float(tf.reduce_mean(losses.cross_entropy(y_hat, tiny_mlp(2)(student_input))))
  other_student_view = views["weak" if student_view == "strong" else "strong"]
  np.testing.assert_allclose(float(metrics["student/loss"]), student_loss(views[student_view]), rtol=1e-6)
  assert abs(student_loss(other_student_view) - student_loss(views[student_view])) > 1e-3
  h = float(metrics["mpl/h"])

  def expected_gradient(scored):
    with tf.GradientTape() as tape:
      loss = h * tf.reduce_mean(losses.cross_entropy(y_hat, reference(scored)))
      if uda_weight:
        loss += uda_weight * losses.uda_consistency(reference(u_weak), reference(u_strong))[0]
    return np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, reference.trainable_variables)])
  got = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, teacher.trainable_variables)])
  np.testing.assert_allclose(got, expected_gradient(view), rtol=1e-6, atol=1e-9)
  assert np.linalg.norm(expected_gradient(other) - expected_gradient(view)) > 1e-3 * np.linalg.norm(got)


def test_label_smoothing_reaches_the_teachers_and_the_students_losses(float64):
  x_l, y_l, x_u = tiny_batch(seed=2, n_u=5)
  teacher, student = tiny_mlp(1), tiny_mlp(2)
  t_ref, s_ref = tiny_mlp(1), tiny_mlp(2)
  model = MetaPseudoLabelsModel(teacher=teacher, student=student, pseudo_labels="argmax", label_smoothing=0.2,
                                student_label_smoothing=0.3)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
  metrics = model.train_step(((x_l, y_l), x_u))
  y_hat = tf.argmax(t_ref(x_u), -1)

  def smoothed_ce(labels, logits, s):  # by hand: (1 - s) one-hot + s / K
    target = (1 - s) * tf.one_hot(labels, 3, dtype=logits.dtype) + s / 3
    return float(tf.reduce_mean(-tf.reduce_sum(target * tf.nn.log_softmax(logits), -1)))
  assert float(metrics["teacher/supervised_loss"]) == pytest.approx(smoothed_ce(y_l, t_ref(x_l), 0.2), rel=1e-6)
  assert float(metrics["student/loss"]) == pytest.approx(smoothed_ce(y_hat, s_ref(x_u), 0.3), rel=1e-6)
  assert smoothed_ce(y_hat, s_ref(x_u), 0.3) != pytest.approx(smoothed_ce(y_hat, s_ref(x_u), 0.0), rel=1e-3)


def test_feedback_losses_are_computed_in_float32_under_mixed_bfloat16():
  """A bfloat16 difference of two nearly equal losses is mostly rounding; the measurement is float32."""
  x_l, y_l, x_u = tiny_batch(n_l=16, n_u=16, seed=4)
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    teacher, student = tiny_mlp(1, hidden=32), tiny_mlp(2, hidden=32)
    model = MetaPseudoLabelsModel(teacher=teacher, student=student, pseudo_labels="argmax")
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
    weights = student.get_weights()
    low = tf.reduce_mean(losses.cross_entropy(y_l, tf.cast(student(x_l), tf.float32))).numpy()
    metrics = model.train_step(((x_l, y_l), tf.cast(x_u, tf.float32)))
  finally:
    keras.mixed_precision.set_global_policy(policy)
  full = tiny_mlp(2, hidden=32)
  full.set_weights(weights)
  exact = tf.reduce_mean(losses.cross_entropy(y_l, full(x_l))).numpy()
  assert float(metrics["student/labeled_loss"]) == pytest.approx(exact, rel=1e-6)
  assert abs(low - exact) > 1e-4 * abs(exact), "the check needs bfloat16 rounding to be visible"
  assert student.layers[1].compute_dtype == "bfloat16", "the policy is restored after the measurement"


def test_the_teachers_batch_norm_statistics_follow_its_training_forward():
  """The official code never runs the teacher's moving-statistics updates; here one step moves them."""
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=16)
  model = MetaPseudoLabelsModel(teacher=noisy_student(seed=5, dropout=0.0), student=tiny_mlp(2))
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
  reference = noisy_student(seed=5, dropout=0.0)
  reference(tf.concat([x_l, x_u], 0), training=True)  # the teacher's one forward of a step without UDA
  model.train_step(((x_l, y_l), x_u))
  for got, want, start in zip(model.teacher.non_trainable_variables, reference.non_trainable_variables,
                              noisy_student(seed=5, dropout=0.0).non_trainable_variables):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert not np.allclose(got.numpy(), start.numpy())
