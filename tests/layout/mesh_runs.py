"""Runs of the same MPL step or gradient on a DTensor mesh and on one device, and their comparison.

The pieces the checks of tests/layout/dtensor_checks.py share (they run in its process, after it has configured the
virtual CPU devices): seeded networks, float32 data, MPL models on a mesh or not, their full state, and the two
comparisons, `compare_with_single_device` (MPL runs) and `gradients_equal_single_device` (one gradient).
"""
import contextlib
import sys

import numpy as np
import tensorflow as tf

from mpl_tf import layout

B, R, NUM_CLASSES = 4, 2, 4  # labeled batch, unlabeled ratio (unlabeled batch = R * B), classes


def networks(name):
  """(teacher, student, input shape) built on one device by the model builder, seeded, no dropout."""
  from mpl_tf.models import builder  # pylint: disable=import-outside-toplevel
  if name == "mlp":
    shape, options = (6,), dict(hidden=(8, 8), activation="tanh", init_scale=0.5)
  elif name == "cnn_small":  # batch norm, three convolutions
    shape, options = (8, 8, 1), dict(dropout=0.0, bn_fused=False)
  elif name == "wrn28_2":
    shape, options = (32, 32, 3), dict(dropout=0.0, bn_fused=False)
  else:  # resnet50, efficientnet_b0: keras.applications' initialisers are unseeded, so build once and copy
    shape = (32, 32, 3)
    options = dict(dropout=0.0, bn_fused=False)
    if name.startswith("efficientnet"):  # no stochastic depth; grouped depthwise convs, as on a mesh
      options.update(drop_connect_rate=0.0, grouped_depthwise=True)
    first = builder.build_model(name, NUM_CLASSES, shape, **options)
    second = builder.build_model(name, NUM_CLASSES, shape, **options)
    second.set_weights(first.get_weights())
    return first, second, shape
  nets = [builder.build_model(name, NUM_CLASSES, shape, seed=seed, **options) for seed in (1, 2)]
  return nets[0], nets[1], shape


def steps_data(shape, steps, seed=0):
  """`steps` MPL elements ((x_l, y_l), (x_u_weak, x_u_strong)) as one tf.data dataset: float32 images (floatx
  images under floatx float64: the same float32 numbers, cast) and int32 labels."""
  rng = np.random.default_rng(seed)
  def images(n):
    return rng.uniform(size=(n,) + shape).astype(np.float32).astype(keras_floatx())
  xs = [((images(B), rng.integers(0, NUM_CLASSES, B).astype(np.int32)), (images(B * R), images(B * R)))
        for _ in range(steps)]
  return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda *x: np.stack(x), *xs))


def mpl_model(mesh, name="mlp", **options):
  """A compiled MetaPseudoLabelsModel (UDA teacher, EMA, momentum, baseline) with its networks on `mesh`."""
  from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel  # pylint: disable=import-outside-toplevel
  from mpl_tf.algorithms.uda import UDASettings  # pylint: disable=import-outside-toplevel
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  teacher, student, shape = networks(name)
  options = dict(dict(pseudo_labels="argmax", uda=UDASettings(weight=1.0), ema_decay=0.9, seed=3), **options)
  model = MetaPseudoLabelsModel(teacher=layout.place_network(teacher, mesh),
                                student=layout.place_network(student, mesh), **options)
  def sgd():  # under floatx float64 too: tf-keras' DTensor optimizer cannot make a float64 learning rate
    with floatx("float32"):
      return layout.make_optimizer(keras.optimizers.SGD, mesh, learning_rate=0.1, momentum=0.9)
  model.compile(teacher_optimizer=sgd(), student_optimizer=sgd())
  return model, shape


def train_steps(model, dataset, steps):
  """Runs `steps` train steps; returns the metrics of each step (reset after each)."""
  iterator = layout.iterator(dataset, layout.mesh_of(model))
  train_function = model.make_train_function()
  logs = []
  for _ in range(steps):
    logs.append({k: float(layout.to_host(v)) for k, v in train_function(iterator).items()})
    model.reset_metrics()
  return logs


def weight_keys(net):
  """'<layer>.<attribute>' of each of a network's weights, in `net.weights` order (the layout map's keys)."""
  return [f"{layer.name}.{var.name.split('/')[-1].split(':')[0]}" for layer in net.layers for var in layer.weights]


def state(model):
  """Every weight of the method model's networks, their momentum slots, step and baseline, gathered."""
  out = {}
  for part in ("teacher", "student", "ema_student"):
    net = getattr(model, part)
    assert len(weight_keys(net)) == len(net.weights)
    for key, value in zip(weight_keys(net), layout.get_weights(net)):
      out[f"{part}/{key}"] = value
  for part in ("teacher", "student"):
    opt = getattr(model, f"{part}_optimizer")
    for i, slot in enumerate(opt.momentums):  # in the order of the network's trainable variables
      out[f"{part}_momentum/{i}"] = layout.to_host(slot)
    out[f"{part}_optimizer/iterations"] = layout.to_host(opt.iterations)
  out["h_baseline"] = layout.to_host(model.h_baseline)
  out["global_step"] = layout.to_host(model.global_step)
  return out


def assert_same_run(ref_logs, logs, ref_state, mesh_state, rtol=1e-5, atol=2e-6):
  for step, (a, b) in enumerate(zip(ref_logs, logs)):
    assert set(a) == set(b), (sorted(a), sorted(b))
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=atol, err_msg=f"step {step}: {key}")
  assert set(ref_state) == set(mesh_state)
  worst = max(float(np.max(np.abs(mesh_state[k] - ref_state[k]))) for k in ref_state)
  print(f"[dtensor_checks]   largest weight difference {worst:.1e}", file=sys.stderr)
  for key in ref_state:
    np.testing.assert_allclose(mesh_state[key], ref_state[key], rtol=rtol, atol=atol, err_msg=key)


def compare_with_single_device(batch, model, name="mlp", steps=3, dtype="float32", **options):
  """MPL on a batch x model mesh vs one device: every metric of every step and every final weight.

  float32: within rtol 1e-5, atol 2e-6 (the small networks). float64 (`dtype`, for deep networks, where float32
  cannot tell a wrong computation from rounding): within rtol 1e-6, atol 1e-7. Why float64 for WRN-28-2: its
  untrained batch-norm stack amplifies float32 rounding chaotically. The same single-device step with the
  examples of each batch reordered moves step 0's teacher/loss by 2.3e-5 and the state after two steps by 6e-4
  (relative norm); the mesh moves them by 4.1e-5 and 3.4e-4, and per metric either can be ten times the other.
  In float64 the mesh run and the single-device run agree to 4.4e-16 (largest weight difference) and within
  rtol 1e-6, atol 1e-7 on the metrics (float32 means: one float32 ulp is 6e-8 relative); a small real error injected in the mesh networks (each batch norm's variance taken
  as the mean of its two batch shards' variances) moves step 0's teacher/loss by 4.5e-4 and the state by 5e-3
  (docs/dtensor.md, "Equality with the single-device run").
  """
  with floatx(dtype):
    mesh = layout.create_mesh(batch=batch, model=model, device_type="CPU")
    ref, shape = mpl_model(None, name, **options)
    ref_logs = train_steps(ref, steps_data(shape, steps), steps)
    placed, _ = mpl_model(mesh, name, **options)
    logs = train_steps(placed, steps_data(shape, steps), steps)
    assert placed.teacher.weights[0].dtype == dtype, placed.teacher.weights[0].dtype
  assert all(np.isfinite(v) for log in logs for v in log.values())
  assert abs(logs[-1]["mpl/h"]) > 0 and ref_logs[0]["teacher/loss"] != ref_logs[-1]["teacher/loss"]
  tolerance = dict(rtol=1e-5, atol=2e-6) if dtype == "float32" else dict(rtol=1e-6, atol=1e-7)
  assert_same_run(ref_logs, logs, state(ref), state(placed), **tolerance)
  return placed


@contextlib.contextmanager
def floatx(dtype):
  """Keras layers, weights and `steps_data` in `dtype` inside (the dtype policy follows floatx), then as before."""
  policy, before = keras_module().mixed_precision.global_policy(), keras_floatx()
  keras_module().mixed_precision.set_global_policy(None)
  keras_module().backend.set_floatx(dtype)
  try:
    yield
  finally:
    keras_module().backend.set_floatx(before)
    keras_module().mixed_precision.set_global_policy(policy)


def keras_module():
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  return keras


def keras_floatx():
  return keras_module().backend.floatx()


def gradients_equal_single_device(name, batch, model):
  """Loss and gradients of a family's network in training mode, on a mesh and on one device.

  Compared against the float32 noise floor, not elementwise: an untrained ResNet-50 or EfficientNet with batch
  norm over few values per channel turns float32 sums taken in another order into percent-level gradient
  differences on one device already (the same batch in another order: ~1% relative for ResNet-50 here), and
  a training step makes them chaotic. The mesh's error must be of that order and the directions must agree.
  """
  from mpl_tf import losses  # pylint: disable=import-outside-toplevel
  mesh = layout.create_mesh(batch=batch, model=model, device_type="CPU")
  net, copy, shape = networks(name)
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(2 * B,) + shape).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, 2 * B).astype(np.int32)

  def grads(network, x, y):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(losses.cross_entropy(y, network(x, training=True)))
    return loss, tape.gradient(loss, network.trainable_variables)

  loss, g = tf.function(grads)(net, x, y)
  order = np.arange(len(y)).reshape(-1, 2)[:, ::-1].ravel()  # swap neighbours: another summation order
  _, floor_g = tf.function(grads)(net, x[order], y[order])
  placed = layout.place_network(copy, mesh)
  mesh_loss, mesh_g = tf.function(grads)(placed, layout.to_mesh(x, layout.batch_sharded(mesh, 4)),
                                         layout.to_mesh(y, layout.batch_sharded(mesh, 1)))
  g, floor_g, mesh_g = (np.concatenate([layout.to_host(v).ravel() for v in grad]) for grad in (g, floor_g, mesh_g))
  error = np.linalg.norm(mesh_g - g) / np.linalg.norm(g)
  floor = np.linalg.norm(floor_g - g) / np.linalg.norm(g)
  cosine = float(np.dot(mesh_g, g) / np.linalg.norm(mesh_g) / np.linalg.norm(g))
  print(f"[dtensor_checks] {name} on {batch}x{model}: loss {float(loss):.6f} vs "
        f"{float(layout.to_host(mesh_loss)):.6f}; relative gradient error {error:.1e} (reordered batch on one "
        f"device: {floor:.1e}), cosine {cosine:.5f}", file=sys.stderr)
  np.testing.assert_allclose(float(layout.to_host(mesh_loss)), float(loss), rtol=1e-3, err_msg=name)
  assert error < 10 * max(floor, 1e-6) and cosine > 0.995, (name, error, floor, cosine)


