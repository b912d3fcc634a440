"""`teacher_backward='before_student'`: the memory-lean MPL step trains the same run as the default step.

The lean step takes the teacher's gradient as grad(own losses) + w (h - b) grad(score) before the student steps,
where the default step differentiates own + w (h - b) score once, after it. Both are the same gradient; in float64
they agree to rounding, step after step, with everything that touches the teacher's update on: UDA on two views,
sampled labels, a non-zero baseline, Nesterov momentum with weight decay, gradient clipping and batch norm.
"""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf.algorithms.uda import UDASettings
from mpl_tf.keras import keras
from mpl_tf.models import build_model


def run(teacher_backward, steps=4, mpl_weight=1.0):
  def net(seed):
    return build_model("cnn_small", num_classes=4, input_shape=(8, 8, 1), seed=seed, dropout=0.0)

  def sgd():
    return keras.optimizers.SGD(0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)

  model = MetaPseudoLabelsModel(teacher=net(1), student=net(2), pseudo_labels="sample", baseline_decay=0.5,
                                uda=UDASettings(weight=2.0, temperature=0.7, threshold=0.3), grad_clip_norm=1.0,
                                mpl_weight=mpl_weight, teacher_backward=teacher_backward, seed=3)
  model.compile(teacher_optimizer=sgd(), student_optimizer=sgd())
  rng = np.random.default_rng(0)
  dtype = keras.backend.floatx()
  images = lambda n: tf.constant(rng.random((n, 8, 8, 1)), dtype)  # noqa: E731
  element = ((images(6), tf.constant(rng.integers(0, 4, 6), tf.int32)), (images(10), images(10)))
  if not steps:
    return model, {}
  history = model.fit(tf.data.Dataset.from_tensors(element).repeat(), steps_per_epoch=1, epochs=steps, verbose=0)
  return model, history.history


@pytest.mark.parametrize("mpl_weight", [1.0, -1.0])
def test_teacher_first_step_trains_the_same_run(float64, mpl_weight):
  default, logs_default = run("after_student", mpl_weight=mpl_weight)
  lean, logs_lean = run("before_student", mpl_weight=mpl_weight)
  assert np.std(logs_default["mpl/h"]) > 0 and abs(float(default.h_baseline.numpy())) > 0
  for name in ("mpl/h", "teacher/loss", "teacher/mpl_loss", "student/loss", "uda/loss"):
    np.testing.assert_allclose(logs_lean[name], logs_default[name], rtol=1e-9, atol=1e-12, err_msg=name)
  for network in ("teacher", "student"):
    for a, b in zip(getattr(lean, network).get_weights(), getattr(default, network).get_weights()):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=network)
  moved = [np.abs(a - b).max() for a, b in zip(default.teacher.get_weights(), run("after_student", steps=0)[0]
                                               .teacher.get_weights())]
  assert max(moved) > 1e-3  # the comparison is not of two untrained networks


def test_teacher_first_needs_hard_labels():
  with pytest.raises(ValueError, match="teacher_backward='before_student' needs hard pseudo labels"):
    MetaPseudoLabelsModel(teacher=build_model("mlp", num_classes=2, input_shape=(2,)),
                          student=build_model("mlp", num_classes=2, input_shape=(2,)), pseudo_labels="soft",
                          teacher_backward="before_student")
  with pytest.raises(ValueError, match="teacher_backward must be one of"):
    MetaPseudoLabelsModel(teacher=build_model("mlp", num_classes=2, input_shape=(2,)),
                          student=build_model("mlp", num_classes=2, input_shape=(2,)), teacher_backward="early")


def test_student_step_waits_for_the_teacher_backward():
  """The memory saving needs an order the data flow alone does not give: the student's forward on the unlabeled
  batch must come after both teacher gradients. Checked in the traced train function."""
  model, _ = run("before_student", steps=1)
  graph = model.train_function.get_concrete_function(
      iter(tf.data.Dataset.from_tensors(((tf.zeros((6, 8, 8, 1)), tf.zeros((6,), tf.int32)),
                                         (tf.zeros((10, 8, 8, 1)), tf.zeros((10, 8, 8, 1))))))).graph
  identities = [op for op in graph.get_operations() if op.type == "Identity" and op.control_inputs
                and any("gradient" in c.name.lower() for c in op.control_inputs)]
  assert len(identities) >= 3, "the student's inputs carry no control dependency on the teacher's gradients"
