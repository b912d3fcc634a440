"""`teacher_activations='recompute'`: the MPL step that runs the teacher's forward pass twice trains the same run.

The recomputing step draws the pseudo labels from a tape-less teacher forward, lets the student step, then runs the
teacher forward again under the tape for the backward pass; the default step keeps the activations of its one
forward instead. With the teacher's moving statistics and dropout generators restored in between
(`mpl_tf.algorithms.recompute`), both steps compute the same thing: checked bit for bit (weights, float32) with every
part of the step that touches the teacher on (UDA on two views, sampled labels, a non-zero baseline, Nesterov
momentum with weight decay, gradient clipping, batch norm, dropout, mpl_weight +-1, the cosine feedback, a label
temperature), and with soft labels, whose meta-gradient the recomputing step passes to the teacher as a cotangent on
its logits (also bit for bit, with and without a temperature). 3 steps each.
"""
import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf.algorithms import recompute
from mpl_tf.algorithms.uda import UDASettings
from mpl_tf.keras import keras
from mpl_tf.models import build_model


def net(seed, dropout=0.0):
  return build_model("cnn_small", num_classes=4, input_shape=(8, 8, 1), seed=seed, dropout=dropout)


def run(teacher_activations, steps=3, mpl_weight=1.0, pseudo_labels="sample", dropout=0.0, loss_scale=False,
        **options):
  def sgd(scaled=False):
    optimizer = keras.optimizers.SGD(0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return keras.mixed_precision.LossScaleOptimizer(optimizer) if scaled else optimizer

  teacher = net(1, dropout)
  if dropout:  # the default step draws the same masks only from the same kind of generator
    recompute.use_restorable_generators(teacher, seed=3)
  model = MetaPseudoLabelsModel(teacher=teacher, student=net(2), pseudo_labels=pseudo_labels, baseline_decay=0.5,
                                uda=UDASettings(weight=2.0, temperature=0.7, threshold=0.3), grad_clip_norm=1.0,
                                mpl_weight=mpl_weight, teacher_activations=teacher_activations, seed=3, **options)
  model.compile(teacher_optimizer=sgd(loss_scale), student_optimizer=sgd())
  rng = np.random.default_rng(0)
  dtype = keras.backend.floatx()
  images = lambda n: tf.constant(rng.random((n, 8, 8, 1)), dtype)  # noqa: E731
  element = ((images(6), tf.constant(rng.integers(0, 4, 6), tf.int32)), (images(10), images(10)))
  if not steps:
    return model, {}
  history = model.fit(tf.data.Dataset.from_tensors(element).repeat(), steps_per_epoch=1, epochs=steps, verbose=0)
  return model, history.history


def assert_same_run(a, logs_a, b, logs_b):
  """Weights (the teacher's moving statistics included) bit for bit; logged losses to float32 rounding: the two
  graphs add up a loss's terms in different fused kernels (seen: teacher/loss 1 ulp apart with equal weights)."""
  for name in ("mpl/h", "teacher/loss", "teacher/mpl_loss", "student/loss", "uda/loss"):
    np.testing.assert_allclose(logs_a[name], logs_b[name], rtol=1e-6, atol=1e-7, err_msg=name)
  for network in ("teacher", "student"):
    for x, y in zip(getattr(a, network).get_weights(), getattr(b, network).get_weights()):
      np.testing.assert_array_equal(x, y, err_msg=network)


@pytest.mark.parametrize("mpl_weight,dropout,options", [
    (1.0, 0.3, {}), (-1.0, 0.0, {}), (1.0, 0.0, dict(feedback="cosine", label_temperature=0.5))],
    ids=["dropout", "flipped_sign", "cosine_tau_0.5"])
def test_recomputing_step_trains_the_same_run_bit_for_bit(mpl_weight, dropout, options):
  default, logs_default = run("keep", mpl_weight=mpl_weight, dropout=dropout, **options)
  again, logs_again = run("recompute", mpl_weight=mpl_weight, dropout=dropout, **options)
  assert np.std(logs_default["mpl/h"]) > 0 and abs(float(default.h_baseline.numpy())) > 0
  assert_same_run(again, logs_again, default, logs_default)
  moved = [np.abs(a - b).max() for a, b in zip(default.teacher.get_weights(), run("keep", steps=0)[0]
                                               .teacher.get_weights())]
  assert max(moved) > 1e-3  # the comparison is not of two untrained networks


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_recomputing_step_with_soft_labels_takes_the_same_meta_gradient_bit_for_bit(tau):
  """Soft labels: the default step differentiates through the student's update inside the teacher's tape; the
  recomputing one takes the same derivative with respect to the teacher's logits (through the temperature) and
  passes it on."""
  default, logs_default = run("keep", pseudo_labels="soft", label_temperature=tau)
  again, logs_again = run("recompute", pseudo_labels="soft", label_temperature=tau)
  assert_same_run(again, logs_again, default, logs_default)
  without_mpl, _ = run("keep", pseudo_labels="soft", mpl_weight=0.0, label_temperature=tau)
  differs = max(np.abs(a - b).max() for a, b in zip(default.teacher.get_weights(), without_mpl.teacher.get_weights()))
  assert differs > 1e-4  # the meta-gradient moved the teacher: the comparison covers it


def test_mixed_float16_overflowing_loss_scale_skips_steps_in_both_steps_alike():
  """mixed_float16 with a dynamic loss scale: the first steps' scaled gradients overflow by design and the
  optimizer skips them. The default step used to crash there (check_numerics on the logits' gradient); the
  recomputing step scales the soft labels' cotangent as the default step scales its loss, and must log finite
  losses on the skipped steps (an inf cotangent times the surrogate's zero made them NaN)."""
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    default, logs_default = run("keep", pseudo_labels="soft", loss_scale=True)
    again, logs_again = run("recompute", pseudo_labels="soft", loss_scale=True)
  finally:
    keras.mixed_precision.set_global_policy(policy)
  assert float(default.teacher_optimizer.loss_scale) < 2.0 ** 15  # at least one step overflowed and was skipped
  assert all(np.isfinite(logs_again["teacher/loss"])), logs_again["teacher/loss"]
  assert_same_run(again, logs_again, default, logs_default)


def test_snapshot_and_restore_repeat_a_training_forward():
  """Without the restore a second training-mode forward draws another dropout mask and moves the moving
  statistics twice; with it, it repeats the first forward's output and leaves the state one forward leaves."""
  network = net(5, dropout=0.5)
  recompute.use_restorable_generators(network, seed=1)
  x = tf.constant(np.random.default_rng(1).random((6, 8, 8, 1)), tf.float32)
  forward = tf.function(lambda: network(x, training=True))
  state = recompute.snapshot(network)
  first = forward().numpy()
  after_one = [v.numpy() for v in network.non_trainable_variables]
  assert not np.array_equal(forward().numpy(), first)
  recompute.restore(network, state)
  np.testing.assert_array_equal(forward().numpy(), first)
  for value, expected in zip(network.non_trainable_variables, after_one):
    np.testing.assert_array_equal(value.numpy(), expected)


def test_legacy_random_ops_are_refused_or_replaced():
  network = net(5, dropout=0.5)
  with pytest.raises(ValueError, match="legacy random ops, whose state cannot be restored"):
    recompute.snapshot(network)
  assert recompute.use_restorable_generators(network, seed=1) == 1
  assert recompute.use_restorable_generators(network, seed=1) == 0
  model = MetaPseudoLabelsModel(teacher=net(1, dropout=0.2), student=net(2, dropout=0.2),
                                teacher_activations="recompute", seed=0)
  assert recompute.use_restorable_generators(model.teacher, seed=0) == 0  # the model replaced them
  with pytest.raises(ValueError, match="teacher_activations must be one of"):
    MetaPseudoLabelsModel(teacher=net(1), student=net(2), teacher_activations="early")


def test_second_forward_waits_for_the_student():
  """The memory saving needs an order the data flow alone does not give: the teacher's second forward must come
  after the student's step (its inputs wait for h). Checked in the traced train function."""
  model, _ = run("recompute", steps=1)
  graph = model.train_function.get_concrete_function(
      iter(tf.data.Dataset.from_tensors(((tf.zeros((6, 8, 8, 1)), tf.zeros((6,), tf.int32)),
                                         (tf.zeros((10, 8, 8, 1)), tf.zeros((10, 8, 8, 1))))))).graph
  waiting = [op for op in graph.get_operations() if "teacher_input_after_student" in op.name]
  assert waiting and all(op.type == "Identity" and op.control_inputs for op in waiting), waiting
  downstream, frontier = set(), list(waiting)
  while frontier:
    for out in frontier.pop().outputs:
      for consumer in out.consumers():
        if consumer not in downstream:
          downstream.add(consumer)
          frontier.append(consumer)
  assert any(op.type == "Conv2D" for op in downstream), "the teacher's second forward does not wait for the student"


def test_xla_keeps_the_second_forward():
  """Under XLA a control dependency is no edge of the compiled program: common-subexpression elimination merged
  the recomputed forward into the first (same convolution count as the default step in the optimised HLO). The
  step puts an optimisation barrier in the way when the model is compiled with jit_compile."""
  counts = {}
  for mode in ("keep", "recompute"):
    model, _ = run(mode, steps=0)
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.1), student_optimizer=keras.optimizers.SGD(0.1),
                  jit_compile=True)
    element = ((tf.zeros((6, 8, 8, 1)), tf.zeros((6,), tf.int32)), (tf.zeros((10, 8, 8, 1)), tf.zeros((10, 8, 8, 1))))
    hlo = tf.function(model.train_step, jit_compile=True).experimental_get_compiler_ir(element)(stage="optimized_hlo")
    counts[mode] = hlo.count(" convolution(")
  assert counts["recompute"] == counts["keep"] + 3, counts  # cnn_small: three convolutions a forward pass
