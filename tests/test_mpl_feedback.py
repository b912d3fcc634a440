"""The feedback h measures the student's update and nothing else, and the teacher follows its sign."""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses
from mpl_tf.keras import keras
from tests.conftest import tiny_batch, tiny_mlp


def noisy_student(seed=2):
  """A student with batch norm and dropout: the two things that bias h in public implementations."""
  inputs = keras.Input((2,))
  x = keras.layers.Dense(16, kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
  x = keras.layers.BatchNormalization(momentum=0.5)(x)
  x = keras.layers.Activation("relu")(x)
  x = keras.layers.Dropout(0.5, seed=seed)(x)
  outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
  return keras.Model(inputs, outputs)


def test_h_is_exactly_zero_while_the_student_waits_even_with_batch_norm_and_dropout():
  x_l, y_l, x_u = tiny_batch(n_l=8, n_u=16)
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=noisy_student(), student_wait_steps=3)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1),
                student_optimizer=keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True, weight_decay=1e-2))
  step = tf.function(model.train_step)
  trainable = [v.numpy() for v in model.student.trainable_variables]
  bn_stats = [v.numpy() for v in model.student.non_trainable_variables]
  for _ in range(3):
    model.reset_metrics()
    metrics = step(((x_l, y_l), x_u))
    assert float(metrics["mpl/h"]) == 0.0
    assert float(metrics["lr/student"]) == 0.0
  for before, var in zip(trainable, model.student.trainable_variables):
    np.testing.assert_array_equal(before, var.numpy())
  # the student did run in training mode: its batch-norm statistics moved, yet h stayed exactly 0
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(bn_stats, model.student.non_trainable_variables))
  model.reset_metrics()
  assert float(step(((x_l, y_l), x_u))["mpl/h"]) != 0.0, "after the wait the student learns and h moves"


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
  with pytest.raises(ValueError, match="pseudo_labels"):
    MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), pseudo_labels="hard")
  with pytest.raises(ValueError, match="feedback"):
    MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2), feedback="new_minus_old")
  model = MetaPseudoLabelsModel(teacher=tiny_mlp(1), student=tiny_mlp(2))
  with pytest.raises(ValueError, match="distinct"):
    opt = keras.optimizers.SGD(0.1)
    model.compile(teacher_optimizer=opt, student_optimizer=opt)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1))
  x_l, y_l, _ = tiny_batch()
  with pytest.raises(ValueError, match="labeled data only"):
    model.train_step((x_l, y_l))
