"""`common.LeakyReLU`: Keras' leaky ReLU with the gradient taken from its output.

It exists to save memory (the backward keeps y, not x), so the tests pin down that nothing else changes: the
values, the first and the second derivatives are those of Keras' layer bit for bit, in every float type, at the
edge cases (0, -0, denormals, values whose alpha * x underflows), and through a whole network; and that the
traced gradient indeed reads the layer's output, not the batch norm's.
"""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import losses
from mpl_tf.keras import keras
from mpl_tf.models import build_model
from mpl_tf.models.common import LeakyReLU, leaky_relu_from_output

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
from benchmark_step import with_keras_leaky_relu  # noqa: E402  pylint: disable=wrong-import-position

ALPHA = 0.2


def edge_values(dtype):
  tiny = np.finfo(np.float32).tiny
  values = [0.0, -0.0, 1.0, -1.0, 3.5, -3.5, tiny, -tiny, tiny / 8, -tiny / 8, 1e-30, -1e-30, 1e-45, -1e-45]
  rng = np.random.default_rng(0)
  values += list(rng.normal(size=200) * 10.0 ** rng.integers(-8, 4, size=200))
  return tf.cast(tf.constant(values, tf.float32), dtype)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.float16, tf.bfloat16])
def test_values_and_gradient_are_those_of_tf(dtype):
  x = edge_values(dtype)
  dy = tf.cast(tf.random.stateless_normal(x.shape, (1, 2)), dtype)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    ours, reference = leaky_relu_from_output(x, ALPHA), tf.nn.leaky_relu(x, alpha=ALPHA)
  np.testing.assert_array_equal(ours.numpy(), reference.numpy())
  np.testing.assert_array_equal(tape.gradient(ours, x, output_gradients=dy).numpy(),
                                tape.gradient(reference, x, output_gradients=dy).numpy())


def test_slopes_outside_0_1_fall_back_to_keras():
  x = edge_values(tf.float32)
  for alpha in (0.0, 1.5):
    np.testing.assert_array_equal(LeakyReLU(alpha=alpha)(x).numpy(), keras.layers.LeakyReLU(alpha=alpha)(x).numpy())


def meta_terms(model, x, targets, direction):
  """The loss, its weight gradient, and d/d targets of <grad_w CE(targets, f(x)), direction>: the second-order
  term MPL's soft labels differentiate (the backward through the student's backward)."""
  variables = model.trainable_variables
  with tf.GradientTape() as outer:
    outer.watch(targets)
    with tf.GradientTape() as inner:
      loss = tf.reduce_mean(losses.soft_cross_entropy(targets, model(x, training=True)))
    grads = inner.gradient(loss, variables)
    dot = tf.add_n([tf.reduce_sum(g * d) for g, d in zip(grads, direction)])
  return [loss] + grads + [outer.gradient(dot, targets)]


@pytest.mark.parametrize("name", ["cnn_small", "wrn28_2"])
def test_network_first_and_second_derivatives_unchanged(name):
  model = build_model(name, num_classes=10, input_shape=(16, 16, 3), seed=3, dropout=0.0)  # same forward
  reference = with_keras_leaky_relu(keras, model)
  assert not any(isinstance(layer, LeakyReLU) for layer in reference.layers)
  x = tf.random.stateless_uniform((6, 16, 16, 3), (4, 5))
  targets = tf.nn.softmax(tf.random.stateless_normal((6, 10), (6, 7)))
  direction = [tf.random.stateless_normal(v.shape, (8, i)) for i, v in enumerate(model.trainable_variables)]
  got = tf.function(lambda: meta_terms(model, x, targets, direction))()
  want = tf.function(lambda: meta_terms(reference, x, targets, direction))()
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_gradient_reads_the_output_not_the_batch_norm_output():
  model = build_model("cnn_small", num_classes=10, input_shape=(8, 8, 1), seed=0)
  x = tf.zeros((4, 8, 8, 1))

  @tf.function
  def grads():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(model(x, training=True))
    return tape.gradient(loss, model.trainable_variables)

  graph = grads.get_concrete_function().graph
  readers = [op for op in graph.get_operations() if op.type == "LeakyReluGrad"]
  assert len(readers) == 3, [op.type for op in graph.get_operations()]
  for op in readers:
    producer = op.inputs[1].op
    # y comes out of LeakyRelu (through custom_gradient's IdentityN), never out of the batch norm directly
    assert producer.type in ("LeakyRelu", "IdentityN"), producer.type
    if producer.type == "IdentityN":
      assert producer.inputs[0].op.type == "LeakyRelu"
