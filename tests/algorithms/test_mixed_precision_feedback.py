"""mixed_float16 with a loss-scale optimizer on the student: a skipped student step is feedback 0, not NaN.

A dynamic loss scale starts at 2^15 and overflows the float16 gradients of the first steps by design; the
LossScaleOptimizer then skips the step and halves the scale. The student did not move, so h must be exactly 0,
the moving baseline must stay as it was and the teacher's MPL term must be 0 for that step. Before the fix, the
null-step evaluation of `label_effect` added c * eta * inf to the weights, h became NaN and so did the baseline,
for good (`loss_difference` gave 0 by luck: L(theta) - L(theta) with theta' = theta). A linear student on large
inputs overflows at once.
"""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf.keras import keras

CLASSES, FEATURES = 3, 6


@pytest.fixture
def mixed_float16():
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  yield
  keras.mixed_precision.set_global_policy(policy)


def linear(seed: int) -> keras.Model:
  inputs = keras.Input((FEATURES,))
  logits = keras.layers.Dense(CLASSES, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed))(
      inputs)
  return keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(logits))


def scaled_sgd():
  return keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.001, momentum=0.9, nesterov=True))


def batch(scale: float):
  """Inputs of size `scale`: 2^15 * scale overflows float16 (max 65504) in the scaled gradient when scale is 100."""
  rng = np.random.default_rng(0)
  x_l = tf.constant(scale * rng.normal(size=(8, FEATURES)), tf.float32)
  y_l = tf.constant(rng.integers(0, CLASSES, 8), tf.int32)
  x_u = tf.constant(scale * rng.normal(size=(16, FEATURES)), tf.float32)
  return ((x_l, y_l), x_u)


def model_for(feedback, pseudo_labels, activations):
  model = MetaPseudoLabelsModel(teacher=linear(1), student=linear(2), feedback=feedback, pseudo_labels=pseudo_labels,
                                teacher_activations=activations, baseline_decay=0.5, seed=3)
  model.compile(teacher_optimizer=scaled_sgd(), student_optimizer=scaled_sgd())
  return model


CASES = [("label_effect", "sample", "keep"), ("label_effect", "argmax", "recompute"),
         ("dot_product", "sample", "keep"), ("loss_difference", "sample", "keep"), ("cosine", "sample", "keep"),
         ("label_effect", "soft", "keep"), ("label_effect", "soft", "recompute")]


@pytest.mark.parametrize("feedback,pseudo_labels,activations", CASES)
def test_a_skipped_student_step_gives_h_zero_and_keeps_the_baseline(mixed_float16, feedback, pseudo_labels,
                                                                     activations):
  del mixed_float16
  model = model_for(feedback, pseudo_labels, activations)
  element = batch(scale=100.0)
  model.h_baseline.assign(0.25)  # as a run left it: a skipped step must keep it, not average a 0 into it
  student_before = model.student.get_weights()
  scale_before = float(model.student_optimizer.loss_scale)
  logs = {k: float(v) for k, v in model.train_step(element).items()}
  assert float(model.student_optimizer.loss_scale) < scale_before  # the student's step overflowed: skipped
  for before, after in zip(student_before, model.student.get_weights()):
    np.testing.assert_array_equal(before, after)
  assert logs["mpl/h"] == 0.0
  assert float(model.h_baseline.numpy()) == 0.25
  bad = {name: value for name, value in logs.items() if not np.isfinite(value)}
  assert not bad, bad
  # The advantage h - b is 0 on a skipped step: the teacher's MPL term carries no signal (hard labels); with soft
  # labels the meta-gradient of a step that did not happen is 0 too.
  assert logs["teacher/mpl_loss"] == 0.0


@pytest.mark.parametrize("feedback,pseudo_labels,activations", CASES[:1] + CASES[5:6])
def test_training_goes_on_through_overflows_with_finite_feedback(mixed_float16, feedback, pseudo_labels,
                                                                 activations):
  """fit over 12 steps: the student's loss scale falls until its steps are taken, h becomes non-zero, nothing is
  NaN on the way and the student moved."""
  del mixed_float16
  model = model_for(feedback, pseudo_labels, activations)
  student_before = model.student.get_weights()
  history = model.fit(tf.data.Dataset.from_tensors(batch(scale=100.0)).repeat(), steps_per_epoch=1, epochs=12,
                      verbose=0).history
  for name, values in history.items():
    assert np.all(np.isfinite(values)), (name, values)
  assert np.isfinite(float(model.h_baseline.numpy()))
  assert history["mpl/h"][0] == 0.0 and any(h != 0.0 for h in history["mpl/h"])
  moved = max(np.abs(a - b).max() for a, b in zip(student_before, model.student.get_weights()))
  assert moved > 0.0
