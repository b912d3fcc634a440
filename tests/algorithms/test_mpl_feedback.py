"""The teacher follows the sign of the feedback, and the feedback is only the student's."""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses
from mpl_tf.keras import keras
from mpl_tf.models.mlp import build_mlp
from tests.conftest import tiny_batch, tiny_mlp


def test_a_label_that_helps_the_student_becomes_more_likely_and_one_that_hurts_less_likely(float64):
  """x_u sits on a labeled point of class 0: teaching the student class 0 there lowers its labeled loss."""
  x_l = tf.constant([[1.0, 1.0], [-1.0, -1.0]], tf.float64)
  y_l = tf.constant([0, 1])
  x_u = tf.constant([[1.0, 1.0]], tf.float64)
  for label, helps in ((0, True), (1, False)):
    model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), teacher_supervised_weight=0.0,
                                  baseline_decay=0.0)
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.5), student_optimizer=keras.optimizers.SGD(0.5))
    p_before = tf.nn.softmax(model.teacher(x_u))[0, label].numpy()
    real_sampler = losses.pseudo_labels
    losses.pseudo_labels = lambda logits, mode, seed, fixed=tf.constant([label]): fixed
    try:
      h = float(model.train_step(((x_l, y_l), x_u))["mpl/h"])
    finally:
      losses.pseudo_labels = real_sampler
    p_after = tf.nn.softmax(model.teacher(x_u))[0, label].numpy()
    assert (h > 0) == helps
    assert (p_after > p_before) == helps, (label, h, p_before, p_after)


def test_flipped_sign_ablation_moves_the_teacher_the_other_way(float64):
  x_l, y_l, x_u = tiny_batch(seed=7)
  deltas = {}
  for weight in (1.0, -1.0):
    model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), teacher_supervised_weight=0.0,
                                  baseline_decay=0.0, mpl_weight=weight, pseudo_labels="argmax")
    model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=keras.optimizers.SGD(0.5))
    before = model.teacher.get_weights()
    model.train_step(((x_l, y_l), x_u))
    deltas[weight] = np.concatenate([(a - b).ravel() for a, b in zip(model.teacher.get_weights(), before)])
  assert np.linalg.norm(deltas[1.0]) > 1e-6
  np.testing.assert_allclose(deltas[1.0], -deltas[-1.0], rtol=1e-9)


def test_teacher_update_is_h_times_the_score_of_the_students_label_not_the_official_zero_term(float64):
  """The official release's defect (docs/public_implementations.md): its teacher term CE(stop_grad(softmax(z)), z)
  has gradient softmax(z) - softmax(z) = 0. Through the model's own step (no supervised term, no UDA, no baseline,
  a linear teacher z = x W + c, argmax labels) the teacher must move by -lr_T * h * x^T (softmax(z) - onehot(y_hat))
  / B_u, with y_hat the label the student trained on and h the step's logged feedback: computed here by hand."""
  x_l, y_l, x_u = tiny_batch(seed=5, n_u=6)
  teacher = build_mlp(3, (2,), hidden=(), init_scale=0.8, seed=1, name="teacher")
  model = MetaPseudoLabelsModel(teacher=teacher, student=tiny_mlp(2), pseudo_labels="argmax",
                                teacher_supervised_weight=0.0, baseline_decay=0.0)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.5))
  (kernel, bias), x = teacher.get_weights(), x_u.numpy()
  z = x @ kernel + bias
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  y_hat = z.argmax(-1)
  official = tf.Variable(z)
  with tf.GradientTape() as tape:
    term = losses.soft_cross_entropy(tf.stop_gradient(tf.nn.softmax(official)), official)
  np.testing.assert_allclose(tape.gradient(term, official).numpy(), 0.0, atol=1e-12)  # the official: no signal
  h = float(model.train_step(((x_l, y_l), x_u))["mpl/h"])
  assert abs(h) > 1e-4
  residual = (p - np.eye(3)[y_hat]) / len(x)
  np.testing.assert_allclose(teacher.get_weights()[0], kernel - 0.1 * h * x.T @ residual, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(teacher.get_weights()[1], bias - 0.1 * h * residual.sum(0), rtol=1e-9, atol=1e-12)


def test_baseline_is_a_checkpointed_moving_average_of_h():
  x_l, y_l, x_u = tiny_batch()
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), baseline_decay=0.9,
                                pseudo_labels="argmax")
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.5))
  expected = 0.0
  for _ in range(3):
    model.reset_metrics()
    metrics = model.train_step(((x_l, y_l), x_u))
    assert float(metrics["mpl/h_baseline"]) == pytest.approx(expected, abs=1e-7)
    expected = 0.9 * expected + 0.1 * float(metrics["mpl/h"])
  assert float(model.h_baseline.numpy()) == pytest.approx(expected, rel=1e-5)
  assert any("h_baseline" in name for name, _ in tf.train.list_variables(
      tf.train.Checkpoint(model=model).write("/tmp/mpl_tf_baseline_ckpt")))


def test_student_never_sees_labels_during_mpl(float64):
  """Changing y_l must not change the student's update (only the teacher's and h)."""
  x_l, y_l, x_u = tiny_batch(seed=11)
  updates = []
  for labels in (y_l, (y_l + 1) % 3):
    model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), teacher_supervised_weight=0.0,
                                  pseudo_labels="argmax")
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.5))
    model.train_step(((x_l, labels), x_u))
    updates.append(np.concatenate([w.ravel() for w in model.student.get_weights()]))
  np.testing.assert_array_equal(updates[0], updates[1])


def test_bad_options_and_inputs_are_rejected_with_clear_errors():
  x_l, y_l, x_u = tiny_batch()
  with pytest.raises(ValueError, match="pseudo_labels"):
    MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), pseudo_labels="hard")
  for option, value in (("feedback", "new_minus_old"), ("feedback_batch_norm", "eval"), ("mpl_reduction", "max"),
                        ("student_label_smoothing", 1.0), ("label_temperature", 0.0), ("label_temperature", -1.0),
                        ("label_temperature", float("nan")), ("label_temperature", float("inf"))):
    with pytest.raises(ValueError, match=option):
      MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), **{option: value})
  for options in ({}, {"feedback": "dot_product"}, {"pseudo_labels": "soft", "feedback": "loss_difference"},
                  {"pseudo_labels": "soft", "feedback": "cosine"}):
    with pytest.raises(ValueError, match="SGD"):  # their step is not linear in the gradient: no label effect
      MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), **options).compile(
          teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.Adam(0.1))
  MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), feedback="loss_difference").compile(
      teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.Adam(0.1))
  # the cosine needs no step coefficient: it works with any student optimizer (with hard labels)
  cosine = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), feedback="cosine")
  cosine.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.Adam(0.1))
  h = float(cosine.train_step(((x_l, y_l), x_u))["mpl/h"])
  assert 0.0 < abs(h) <= 1.0
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2))
  with pytest.raises(ValueError, match="distinct"):
    opt = keras.optimizers.SGD(0.1)
    model.compile(teacher_optimizer=opt, student_optimizer=opt)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
  with pytest.raises(ValueError, match="labeled data only"):
    model.train_step((x_l, y_l))
