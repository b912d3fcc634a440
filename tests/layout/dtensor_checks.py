"""DTensor checks on virtual CPU devices, run in a fresh process by tests/layout/test_layout.py.

Virtual devices must be configured before TensorFlow runs its first op, which pytest's process has long done,
so the checks run here: `python tests/layout/dtensor_checks.py [--devices N] CHECK...` runs each named check, catches
its failure, and prints one JSON line `{"check": "ok" | traceback}` last. Most checks compare a mesh run with
the single-device run of the same code, seed and data (tests/layout/mesh_runs.py), in float32, or in float64 where
float32 rounding in a deep network hides what it should show; the others check layouts and refusals.
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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from mpl_tf import layout  # pylint: disable=wrong-import-position

CHECKS = {}
SLOW = {}  # run only when named (tests marked slow): big families, about a minute of tracing each


def check(fn):
  CHECKS[fn.__name__] = fn
  return fn


def slow_check(fn):
  SLOW[fn.__name__] = fn
  return fn


from tests.layout.mesh_runs import (B, NUM_CLASSES, compare_with_single_device, gradients_equal_single_device,  # pylint: disable=wrong-import-position
                              mpl_model, networks, state, steps_data, train_steps)


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
def a_mesh_run_stopped_right_after_a_model_checkpoint_resumes_at_that_checkpoints_data():
  """Stopped right after the model checkpoint of step 2 (the kill window before the data position was written
  first: the resumed run restarted its data at the first batch), resumed to step 4: the uninterrupted run."""
  from mpl_tf import trainer  # pylint: disable=import-outside-toplevel
  data = steps_data((6,), 4).repeat()  # four distinct batches: a restart at the first one would show
  mesh = layout.create_mesh(batch=2, model=1, device_type="CPU")
  def phase(workdir, steps):
    model, _ = mpl_model(mesh)
    trainer.train_phase(model, data, workdir=workdir, phase="mpl", steps=steps, checkpoint_every=2,
                        summary_every=2, verbose=0)
    return model
  save = tf.train.CheckpointManager.save
  def save_then_stop(self, *args, **kwargs):
    path = save(self, *args, **kwargs)
    if kwargs.get("checkpoint_number") == 2:
      raise KeyboardInterrupt(path)
    return path
  with tempfile.TemporaryDirectory() as straight, tempfile.TemporaryDirectory() as stopped:
    reference = state(phase(straight, 4))
    tf.train.CheckpointManager.save = save_then_stop
    try:
      phase(stopped, 4)
      raise AssertionError("the run was not stopped")
    except KeyboardInterrupt:
      pass
    finally:
      tf.train.CheckpointManager.save = save
    assert tf.train.latest_checkpoint(os.path.join(stopped, "checkpoints", "mpl")).endswith("ckpt-2")
    for key, value in state(phase(stopped, 4)).items():
      np.testing.assert_allclose(value, reference[key], rtol=1e-6, atol=1e-7, err_msg=key)


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
  compare_with_single_device(batch=2, model=2, name="wrn28_2", steps=2, dtype="float64")


@slow_check
def resnet50_trains_on_a_data_model_mesh_as_on_one_device():
  gradients_equal_single_device("resnet50", batch=2, model=2)


@slow_check
def efficientnet_b0_trains_on_a_data_model_mesh_as_on_one_device():
  """Without oneDNN a CPU mesh has no gradient for EfficientNet's grouped depthwise convolutions: then the check
  is that the library refuses it up front (see grouped_convolutions_train_on_a_cpu_mesh_only_with_onednn)."""
  if layout.onednn_enabled():
    gradients_equal_single_device("efficientnet_b0", batch=2, model=2)
    return
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  for refused in (lambda: layout.network_options("efficientnet", mesh),
                  lambda: layout.place_network(networks("efficientnet_b0")[0], mesh)):
    assert_refused_without_onednn(refused)


def assert_refused_without_onednn(place):
  try:
    place()
  except NotImplementedError as error:
    assert "grouped convolutions" in str(error) and "TF_ENABLE_ONEDNN_OPTS=1" in str(error), error
  else:
    raise AssertionError("grouped convolutions were placed on a CPU mesh without oneDNN")


@check
def grouped_convolutions_train_on_a_cpu_mesh_only_with_onednn():
  """A grouped Conv2D (EfficientNet's depthwise convolutions on a mesh), stride 1 and 2, on a 2x2 mesh.

  DTensor runs its gradient with TensorFlow's plain kernels, not XLA-compiled as Keras does off a mesh, and
  only oneDNN's CPU kernels have a grouped gradient (`layout.refuse_grouped_convolutions`). With oneDNN: the
  input and kernel gradients equal the single-device (XLA) ones. Without (tests/layout/test_layout.py runs this check
  with TF_ENABLE_ONEDNN_OPTS=0 too): place_network refuses the network by name instead of failing in the step.
  """
  from mpl_tf.keras import keras  # pylint: disable=import-outside-toplevel
  mesh = layout.create_mesh(batch=2, model=2, device_type="CPU")
  inputs = keras.Input((8, 8, 6))
  x = keras.layers.Conv2D(6, 3, padding="same", groups=6, use_bias=False, name="dw1")(inputs)
  x = keras.layers.Conv2D(6, 3, strides=2, padding="same", groups=3, use_bias=False, name="dw2")(x)
  net = keras.Model(inputs, x)
  if not layout.onednn_enabled():
    assert_refused_without_onednn(lambda: layout.place_network(net, mesh))
    return
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 6)).astype(np.float32)

  def grads(network, x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.square(network(x, training=True)))
    return tape.gradient(loss, network.trainable_variables + [x])

  single = [g.numpy() for g in tf.function(grads)(net, tf.constant(x))]
  placed = layout.place_network(net, mesh)
  on_mesh = tf.function(grads)(placed, layout.to_mesh(x, layout.batch_sharded(mesh, 4)))
  for name, a, b in zip(("dw1", "dw2", "input"), single, on_mesh):
    np.testing.assert_allclose(layout.to_host(b), a, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=name)


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
