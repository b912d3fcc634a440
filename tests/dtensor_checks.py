"""DTensor checks on virtual CPU devices, run in a fresh process by tests/test_layout.py.

Virtual devices must be configured before TensorFlow runs its first op, which pytest's process has long done,
so the checks run here: `python tests/dtensor_checks.py [--devices N] CHECK...` runs each named check, catches
its failure, and prints one JSON line `{"check": "ok" | traceback}` last. Every check compares a mesh run with
the single-device run of the same code, seed and float32 data.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from mpl_tf import layout  # pylint: disable=wrong-import-position

CHECKS = {}
SLOW = {}  # run only when named (tests marked slow): big families, about a minute of tracing each
B, R, NUM_CLASSES = 4, 2, 4  # labeled batch, unlabeled ratio (unlabeled batch = R * B), classes


def check(fn):
  CHECKS[fn.__name__] = fn
  return fn


def slow_check(fn):
  SLOW[fn.__name__] = fn
  return fn


# --- shared pieces -------------------------------------------------------------------------------------------
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


def steps_data(shape, steps, seed=0, reorder=False):
  """`steps` MPL elements ((x_l, y_l), (x_u_weak, x_u_strong)) of float32 data, as one tf.data dataset.

  `reorder` swaps neighbouring examples in every batch: the same data summed in another order.
  """
  rng = np.random.default_rng(seed)
  xs = [((rng.uniform(size=(B,) + shape).astype(np.float32), rng.integers(0, NUM_CLASSES, B).astype(np.int32)),
         (rng.uniform(size=(B * R,) + shape).astype(np.float32),
          rng.uniform(size=(B * R,) + shape).astype(np.float32))) for _ in range(steps)]
  if reorder:
    xs = tf.nest.map_structure(lambda x: x[np.arange(len(x)).reshape(-1, 2)[:, ::-1].ravel()], xs)
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
  def sgd():
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


def compare_with_single_device(batch, model, name="mlp", steps=3, noise_floor=False, **options):
  """MPL on a batch x model mesh vs one device: every metric of every step and every final weight.

  Within float32 tolerance (rtol 1e-5, atol 2e-6); with `noise_floor` (deep networks, where float32 sums in
  another order already differ visibly) within 10x the difference between two single-device runs that only
  differ in the order of the examples in each batch.
  """
  mesh = layout.create_mesh(batch=batch, model=model, device_type="CPU")
  ref, shape = mpl_model(None, name, **options)
  ref_logs = train_steps(ref, steps_data(shape, steps), steps)
  placed, _ = mpl_model(mesh, name, **options)
  logs = train_steps(placed, steps_data(shape, steps), steps)
  assert all(np.isfinite(v) for log in logs for v in log.values())
  assert abs(logs[-1]["mpl/h"]) > 0 and ref_logs[0]["teacher/loss"] != ref_logs[-1]["teacher/loss"]
  if not noise_floor:
    assert_same_run(ref_logs, logs, state(ref), state(placed))
    return placed
  other, _ = mpl_model(None, name, **options)
  other_logs = train_steps(other, steps_data(shape, steps, reorder=True), steps)
  pairs = [(f"step {i}: {k}", np.float64(a[k]), np.float64(b[k]), np.float64(c[k]))
           for i, (a, b, c) in enumerate(zip(ref_logs, logs, other_logs)) for k in a]
  ref_state, mesh_state, other_state = state(ref), state(placed), state(other)
  pairs += [(k, ref_state[k], mesh_state[k], other_state[k]) for k in ref_state]
  ratios = []
  for key, a, b, c in pairs:
    error, floor = np.linalg.norm(np.ravel(b - a)), np.linalg.norm(np.ravel(c - a))
    assert error <= 10 * floor + 1e-6 * np.linalg.norm(np.ravel(a)) + 1e-7, (key, error, floor)
    ratios.append(error / max(floor, 1e-12))
  print(f"[dtensor_checks]   mesh difference / reordering difference: median {np.median(ratios):.2f}, "
        f"max {max(ratios):.2f} over {len(pairs)} metrics and weights", file=sys.stderr)
  return placed


# --- the checks ----------------------------------------------------------------------------------------------
@check
def mpl_on_data_parallel_mesh_equals_single_device():
  compare_with_single_device(batch=2, model=1)


@check
def mpl_on_data_model_mesh_equals_single_device():
  compare_with_single_device(batch=2, model=2)


@check
def mpl_with_batch_norm_convs_on_data_model_mesh_equals_single_device():
  compare_with_single_device(batch=2, model=2, name="cnn_small", steps=2)


@check
def soft_labels_and_dot_product_feedback_on_data_model_mesh_equal_single_device():
  compare_with_single_device(batch=2, model=2, steps=2, pseudo_labels="soft", feedback="dot_product")


@check
def recomputed_teacher_forward_on_data_model_mesh_equals_single_device():
  """teacher_activations='recompute' with batch norm (moving statistics restored between the two forwards) and soft
  labels (the meta-gradient handed to the second forward as a cotangent on the teacher's logits)."""
  compare_with_single_device(batch=2, model=2, name="cnn_small", steps=2, pseudo_labels="soft",
                             teacher_activations="recompute")


@check
def one_device_mesh_equals_single_device():
  compare_with_single_device(batch=1, model=1, steps=2)


@check
def sharded_variables_are_sharded_and_the_rest_replicated():
  from tensorflow.experimental import dtensor  # pylint: disable=import-outside-toplevel
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  for name in ("mlp", "cnn_small"):
    model, shape = mpl_model(mesh, name)
    model.teacher_optimizer.build(model.teacher.trainable_variables)  # the slots
    model.student_optimizer.build(model.student.trainable_variables)
    for net in (model.teacher, model.student, model.ema_student):
      plan = {p.key: p for p in layout.sharding_plan(net, 2)}
      seen_sharded = 0
      for layer in net.layers:
        for var in layer.weights:
          placement = plan[f"{layer.name}.{var.name.split('/')[-1].split(':')[0]}"]
          assert isinstance(var, dtensor.DVariable), var.name
          assert tuple(var.layout.sharding_specs) == placement.specs, (var.name, var.layout, placement)
          if placement.sharded:
            seen_sharded += 1
            local = dtensor.unpack(var.read_value())[0].shape
            assert local[-1] * 2 == var.shape[-1], (var.name, local)
          else:
            assert var.layout.is_fully_replicated(), var.name
      expected = {"mlp": 6, "cnn_small": 5}[name]  # mlp: 3 dense kernels + biases; cnn: 3 convs + logits
      assert seen_sharded == expected, (name, seen_sharded)
      kinds = {p.how for p in plan.values() if p.sharded}
      assert kinds == ({"sharded", "gathered"} if name == "mlp" else {"gathered"}), kinds
    for opt, net in ((model.teacher_optimizer, model.teacher), (model.student_optimizer, model.student)):
      assert len(opt.momentums) == len(net.trainable_variables)
      for var, slot in zip(net.trainable_variables, opt.momentums):
        assert slot.layout.sharding_specs == var.layout.sharding_specs, (slot.name, var.name)
    counters = (model._train_counter, model._steps_per_execution)  # pylint: disable=protected-access
    for var in (model.global_step, model.h_baseline) + counters:
      assert isinstance(var, dtensor.DVariable) and var.layout.is_fully_replicated(), var.name
    whole = layout.per_device_bytes(mpl_model(None, name)[0].variables)
    assert layout.per_device_bytes(model.variables) < 0.75 * whole


@check
def pseudo_label_sampling_runs_on_a_mesh():
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  logits = np.random.default_rng(0).normal(size=(20000, 5)).astype(np.float32) * 2
  seed = np.array([7, 3], np.int64)
  single = layout.sample_categorical(tf.constant(logits), tf.constant(seed)).numpy()
  sample = tf.function(lambda x, s: layout.sample_categorical(x, s, mesh))
  on_mesh = layout.to_host(sample(layout.to_mesh(logits, layout.batch_sharded(mesh, 2)),
                                  layout.to_mesh(seed, layout.replicated(mesh, 1))))
  np.testing.assert_array_equal(on_mesh, single)
  freq = np.bincount(single, minlength=5) / len(single)
  probs = tf.nn.softmax(logits).numpy()
  np.testing.assert_allclose(freq, probs.mean(0), atol=0.01)
  model, shape = mpl_model(mesh, pseudo_labels="sample")  # the MPL default, (seed, step) stateless
  logs = train_steps(model, steps_data(shape, 2), 2)
  assert all(np.isfinite(v) for log in logs for v in log.values()) and logs[1]["mpl/h"] != 0


@check
def checkpoints_round_trip_mesh_single_device_mesh():
  from mpl_tf import trainer  # pylint: disable=import-outside-toplevel
  data = steps_data((6,), 4).repeat()
  def phase(mesh, workdir, steps):
    model, _ = mpl_model(mesh)
    trainer.train_phase(model, data, workdir=workdir, phase="mpl", steps=steps, checkpoint_every=2,
                        summary_every=2, verbose=0)
    return model
  with tempfile.TemporaryDirectory() as straight, tempfile.TemporaryDirectory() as mixed:
    reference = state(phase(None, straight, 4))
    first = phase(layout.create_mesh(batch=2, model=2, device_type="CPU"), mixed, 2)
    middle = phase(None, mixed, 3)  # restores the 2x2 mesh's checkpoint (and data position) on one device
    np.testing.assert_equal(int(middle.global_step.numpy()), 3)
    last = phase(layout.create_mesh(batch=2, model=1, device_type="CPU"), mixed, 4)  # and back onto a mesh
    assert int(layout.to_host(last.global_step)) == 4 and int(layout.to_host(first.global_step)) == 2
    for key, value in state(last).items():
      np.testing.assert_allclose(value, reference[key], rtol=1e-5, atol=2e-6, err_msg=key)
    names = os.listdir(os.path.join(mixed, "checkpoints", "mpl"))  # 2 kept, stale data positions removed
    assert {n.split(".")[0] for n in names} == {"checkpoint", "ckpt-3", "ckpt-4", "ckpt-4-data_position"}, names


@check
def export_from_a_mesh_serves_the_live_student():
  from mpl_tf import export  # pylint: disable=import-outside-toplevel
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  model, shape = mpl_model(mesh, "cnn_small")
  train_steps(model, steps_data(shape, 2), 2)
  images = np.random.default_rng(1).integers(0, 256, size=(8,) + shape).astype(np.uint8)
  with tempfile.TemporaryDirectory() as tmp:
    path = export.export_student(model.eval_student, os.path.join(tmp, "student"),
                                 types.SimpleNamespace(input_shape=shape))
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  serve_live = tf.function(lambda x: model.eval_student(x, training=False))
  live = serve_live(layout.to_mesh(images.astype(np.float32) / 255.0, layout.batch_sharded(mesh, 4)))
  np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(layout.to_host(live)).numpy(),
                             atol=1e-5)


@check
def evaluation_of_a_mesh_model_scores_every_example():
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  rng = np.random.default_rng(2)
  test = tf.data.Dataset.from_tensor_slices((rng.uniform(size=(11, 6)).astype(np.float32),
                                             rng.integers(0, NUM_CLASSES, 11).astype(np.int32))).batch(4)
  results = []
  for m in (None, mesh):
    model, _ = mpl_model(m)
    results.append(model.evaluate(test, verbose=0, return_dict=True))
  assert set(results[0]) == {"student/loss", "student/accuracy", "teacher/loss", "teacher/accuracy"}
  for key, value in results[0].items():
    np.testing.assert_allclose(results[1][key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@check
def mixed_precision_on_a_mesh_is_refused_with_a_clear_error():
  """tf-keras leaves mixed-precision variables as LazyInitVariables under LayoutMap.scope() (AutoCastVariable
  hides them from the layout map): refused up front instead of failing later with an AttributeError."""
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  mesh = layout.create_mesh(batch=2, model=1, device_type="CPU")
  teacher, _, _ = networks("mlp")
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    layout.place_network(teacher, mesh)
  except NotImplementedError as error:
    assert "mixed_bfloat16" in str(error) and "float32" in str(error), error
  else:
    raise AssertionError("a mixed-precision network was placed on a mesh")
  finally:
    keras.mixed_precision.set_global_policy("float32")


@slow_check
def wrn28_2_mpl_on_data_model_mesh_equals_single_device():
  compare_with_single_device(batch=2, model=2, name="wrn28_2", steps=2, noise_floor=True)


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


@slow_check
def resnet50_trains_on_a_data_model_mesh_as_on_one_device():
  gradients_equal_single_device("resnet50", batch=2, model=2)


@slow_check
def efficientnet_b0_trains_on_a_data_model_mesh_as_on_one_device():
  gradients_equal_single_device("efficientnet_b0", batch=2, model=2)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("checks", nargs="*", help=f"default: all of {', '.join(CHECKS)}; slow ones by name: "
                      f"{', '.join(SLOW)}")
  parser.add_argument("--devices", type=int, default=4, help="virtual CPU devices")
  args = parser.parse_args()
  layout.initialize("CPU", virtual_devices=args.devices)
  results = {}
  for name in args.checks or list(CHECKS):
    start = time.time()
    try:
      dict(CHECKS, **SLOW)[name]()
      results[name] = "ok"
    except Exception:  # pylint: disable=broad-except
      results[name] = traceback.format_exc()
    print(f"[dtensor_checks] {name}: {'ok' if results[name] == 'ok' else 'FAILED'} ({time.time() - start:.0f} s)",
          file=sys.stderr, flush=True)
  print(json.dumps(results))


if __name__ == "__main__":
  main()
