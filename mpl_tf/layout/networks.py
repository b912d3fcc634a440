"""Networks, method models, optimizers and values on a mesh; single-device copies for evaluation and export."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from mpl_tf.keras import keras, keras_backend
from mpl_tf.layout.mesh import MODEL, Layout, Mesh, batch_sharded, mesh_of
from mpl_tf.layout.plan import GatheredConv2D, GatheredDense, layout_map, sharding_plan, single_device_class

def place_network(network: keras.Model, mesh: Optional[Mesh]) -> keras.Model:
  """`network` (functional, built on one device) on `mesh`, with the same weights; itself when mesh is None.

  The clone has the same layer and variable names and configs, except unfused batch norm, and
  `GatheredConv2D` / `GatheredDense` for the layers whose kernels the plan stores sharded and gathers. Random
  layers (dropout) draw from `tf.random.Generator` on a mesh, so dropout masks differ from the single-device
  run (equal runs need dropout 0).
  """
  if mesh is None:
    return network
  if not isinstance(network, keras.Model) or not getattr(network, "_is_graph_network", False):
    raise TypeError(f"place_network needs a functional Keras model (LayoutMap.scope() breaks subclassed ones); "
                    f"got {type(network).__name__}")
  policy = keras.mixed_precision.global_policy()
  if policy.compute_dtype != policy.variable_dtype:
    # Under a mixed policy tf-keras wraps each variable in an AutoCastVariable, which hides the LazyInitVariable
    # inside from LayoutMap's replacement: the network would hold uninitialised variables with no layout.
    raise NotImplementedError(f"a {policy.name} network cannot be placed on a DTensor mesh (tf-keras' LayoutMap does "
                              "not reach variables wrapped for mixed precision); use run.mixed_precision = None "
                              "(float32) on a mesh")
  grouped = [l.name for l in network.layers if isinstance(l, keras.layers.Conv2D) and getattr(l, "groups", 1) > 1]
  refuse_grouped_convolutions(mesh, grouped)
  plan = {p.key: p for p in sharding_plan(network, mesh.dim_size(MODEL))}
  if any(isinstance(l, keras.layers.Dropout) for l in network.layers):
    keras.backend.experimental.enable_tf_random_generator()

  def layer_class(layer):
    cls = type(layer)
    if plan.get(f"{layer.name}.kernel") is not None and plan[f"{layer.name}.kernel"].how == "gathered":
      cls = {keras.layers.Conv2D: GatheredConv2D, keras.layers.Dense: GatheredDense}.get(cls, cls)
    return cls

  clone = _clone_in_scope(network, layout_map(network, mesh), mesh, layer_class)
  set_weights(clone, get_weights(network))
  return clone


def _clone_in_scope(network: keras.Model, lm, mesh: Mesh, layer_class) -> keras.Model:
  """`network` cloned inside `lm.scope()`, each layer rebuilt from its config as `layer_class(layer)`.

  Batch norm is unfused (no DTensor layout propagation for the fused kernel; `fused` is not in its
  `get_config()`). Initialisers are zeros while the variables are made (no random draws, no sharded random
  init: the caller copies the values in) and the originals are put back afterwards; gathered layers are told the
  replicated layout they gather to.
  """
  initializers: Dict[str, Dict[str, Any]] = {}

  def clone_layer(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
      config["fused"] = False
    originals = {k: v for k, v in config.items() if k.endswith("_initializer") and v is not None}
    config.update({k: "zeros" for k in originals})
    initializers[layer.name] = originals
    return layer_class(layer).from_config(config)

  with lm.scope():
    clone = keras.models.clone_model(network, clone_function=clone_layer)
  for layer in clone.layers:
    for key, value in initializers.get(layer.name, {}).items():
      setattr(layer, key, keras.initializers.get(value))
    if isinstance(layer, (GatheredConv2D, GatheredDense)):
      layer._gather_layout = Layout.replicated(mesh, layer.kernel.shape.rank)  # pylint: disable=protected-access
  return clone


def network_options(family: str, mesh: Optional[Mesh]) -> Dict[str, Any]:
  """Builder options a family needs on a mesh: EfficientNet's depthwise convs as grouped convs.

  Refuses EfficientNet before it is built where grouped convolutions cannot train (`refuse_grouped_convolutions`).
  """
  if mesh is not None and family == "efficientnet":
    refuse_grouped_convolutions(mesh, ["the depthwise convolutions of every EfficientNet block"])
    return {"grouped_depthwise": True}
  return {}


def onednn_enabled() -> bool:
  """Whether this process runs TensorFlow's oneDNN CPU kernels (decided when TensorFlow loads: on by default
  where TensorFlow finds the CPU features it wants, off with TF_ENABLE_ONEDNN_OPTS=0)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
  return bool(_pywrap_util_port.IsMklEnabled())


def refuse_grouped_convolutions(mesh: Mesh, layers: Sequence[str], onednn: Optional[bool] = None) -> None:
  """Raises NotImplementedError when `layers` (grouped Conv2Ds) cannot be trained on `mesh`: a CPU mesh in a
  process without oneDNN (`onednn`: None reads `onednn_enabled()`).

  Why: off a mesh Keras runs a grouped convolution XLA-compiled (`_jit_compiled_convolution_op`). DTensor runs
  the step's ops as plain TensorFlow kernels instead (the failing node is
  `StatefulPartitionedCall/gradients/Conv2D_grad/Conv2DBackpropFilter`), and TensorFlow's own CPU kernels have
  no grouped gradient: Conv2DBackpropFilter fails with "filter_size does not have enough elements, requested
  k*k*C*C, got k*k*C" and Conv2DBackpropInput with "Gradients for grouped convolutions are not supported on
  CPU". oneDNN's CPU kernels do have it (a mesh's gradients then equal the single-device XLA ones,
  tests/layout/dtensor_checks.py). The forward pass works either way; GPU meshes are not refused (untested here).
  """
  if not layers or mesh.device_type().upper() != "CPU":
    return
  if onednn if onednn is not None else onednn_enabled():
    return
  raise NotImplementedError(
      f"grouped convolutions ({', '.join(layers[:3])}{', ...' if len(layers) > 3 else ''}) cannot train on a CPU "
      "mesh without oneDNN: TensorFlow's plain CPU kernels have no gradient for grouped convolutions (DTensor "
      "does not run them XLA-compiled as Keras does off a mesh), and this process runs with oneDNN off "
      "(TF_ENABLE_ONEDNN_OPTS=0, or a CPU TensorFlow does not enable it on). Set TF_ENABLE_ONEDNN_OPTS=1 before "
      "TensorFlow is imported, or train this network on one device (docs/dtensor.md)")


def single_device_copy(network: keras.Model, dtype: Optional[str] = None) -> keras.Model:
  """A plain single-device copy of a (possibly placed) functional network, same weights and layer classes
  as the family's builder makes (GatheredConv2D -> Conv2D), built outside any mesh; with `dtype` (e.g.
  'float32' for export), every layer's dtype policy replaced by it."""
  def plain(layer):
    config = layer.get_config()
    if dtype is not None and "dtype" in config:
      config["dtype"] = dtype
    return single_device_class(layer).from_config(config)
  copy = keras.models.clone_model(network, clone_function=plain)
  copy.set_weights(get_weights(network))
  return copy


def clone_network(network: keras.Model) -> keras.Model:
  """A copy of `network` with the same weights and the same placement (the EMA student).

  Off a mesh this is `keras.models.clone_model` + `set_weights`, except for two things a layer's `get_config()`
  leaves out, which the EMA student (finetuning and distillation go on training it) must keep:
  - a batch norm built unfused stays unfused (a plain clone is fused where the dtype allows; fused batch norm
    moves its moving variance towards the unbiased batch variance, n / (n - 1) times the biased one, so with
    `bn_fused=False` the clone was no longer the run a mesh, always unfused, computes);
  - a random layer (dropout) that draws from a seeded tf.random.Generator gets one with the same seed (a plain
    clone draws from TensorFlow's legacy stateful ops, whose state no checkpoint holds, so a resumed run drew
    other masks). The clone's generator starts from the seed: the state reached is not copied.
  """
  mesh = mesh_of(network)
  if mesh is None:
    def same_layer(layer):
      config = layer.get_config()
      if isinstance(layer, keras.layers.BatchNormalization) and layer.fused is False:
        config["fused"] = False
      return layer.__class__.from_config(config)
    clone = keras.models.clone_model(network, clone_function=same_layer)
    clone.set_weights(network.get_weights())
    # pylint: disable=protected-access
    for layer, copy in zip(_all_layers(network), _all_layers(clone)):
      generator = getattr(layer, "_random_generator", None)
      if (isinstance(generator, keras_backend.RandomGenerator) and generator._seed is not None
          and generator._rng_type == generator.RNG_STATEFUL):
        copy._random_generator = keras_backend.RandomGenerator(seed=generator._seed, rng_type=generator.RNG_STATEFUL)
    return clone
  lm = getattr(network, "_layout_map", None)
  if lm is None:
    raise ValueError("clone_network: a network on a mesh must come from place_network")
  clone = _clone_in_scope(network, lm, mesh, type)
  for dst, src in zip(clone.weights, network.weights):
    dst.assign(src)
  return clone


def _all_layers(network: keras.Model) -> list:
  return list(network._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def is_dtensor(value) -> bool:
  if isinstance(value, dtensor.DVariable):
    return True
  if isinstance(value, tf.Variable):
    value = value.handle
  return isinstance(value, tf.Tensor) and tf.executing_eagerly() and dtensor.is_dtensor(value)


def to_host(value) -> np.ndarray:
  """The full value of a tensor or variable as a numpy array, gathering sharded DTensors first."""
  if isinstance(value, np.ndarray):
    return value
  if not is_dtensor(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
  tensor = tf.convert_to_tensor(value)
  layout = dtensor.fetch_layout(tensor)
  if not layout.is_fully_replicated():
    tensor = dtensor.relayout(tensor, Layout.replicated(layout.mesh, layout.rank))
  return dtensor.unpack(tensor)[0].numpy()


def to_mesh(value, layout: Layout) -> tf.Tensor:
  """A host value (numpy or tensor) as a DTensor with `layout`."""
  tensor = tf.convert_to_tensor(value)
  return dtensor.relayout(dtensor.copy_to_mesh(tensor, Layout.replicated(layout.mesh, layout.rank)), layout)


def get_weights(model) -> List[np.ndarray]:
  """`model.get_weights()`, also for sharded variables (gathered first)."""
  if mesh_of(model) is None:
    return model.get_weights()
  return [to_host(w) for w in model.weights]


def set_weights(model, values: Sequence) -> None:
  """`model.set_weights(values)`, also for variables on a mesh (host values copied in with each layout)."""
  if mesh_of(model) is None:
    model.set_weights(values)
    return
  if len(values) != len(model.weights):
    raise ValueError(f"set_weights: {len(values)} values for {len(model.weights)} weights")
  for var, value in zip(model.weights, values):
    if tuple(var.shape) != tuple(np.shape(value)):
      raise ValueError(f"set_weights: {var.name} has shape {var.shape}, the value {np.shape(value)}")
    var.assign(to_mesh(np.asarray(value, var.dtype.as_numpy_dtype), var.layout))


def variable(initial_value, mesh: Optional[Mesh], **kwargs) -> tf.Variable:
  """`tf.Variable(initial_value, **kwargs)`, a replicated `DVariable` on `mesh` when there is one."""
  if mesh is None:
    return tf.Variable(initial_value, **kwargs)
  dtype = kwargs.pop("dtype", None)
  value = tf.convert_to_tensor(initial_value, dtype=dtype)
  with tf.init_scope():
    return dtensor.DVariable(to_mesh(value, Layout.replicated(mesh, value.shape.rank)), **kwargs)


def place_model(model: keras.Model, mesh: Optional[Mesh]) -> None:
  """Puts a method model's Keras-owned counters on `mesh` (replicated); call before `compile`.

  tf-keras creates a model's step counters as replicated DVariables only when it was built inside a layout
  map scope, which subclassed models cannot be; this gives the method model the same counters by hand.
  """
  if mesh is None:
    return
  model._layout_map = keras.dtensor.experimental.LayoutMap(mesh=mesh)  # pylint: disable=protected-access
  model._init_batch_counters()  # pylint: disable=protected-access


def metric_kwargs(mesh: Optional[Mesh]) -> Dict[str, Any]:
  """Extra keyword arguments for a tf-keras metric on `mesh` ({} off a mesh)."""
  return {} if mesh is None else {"mesh": mesh}


def make_optimizer(cls: type, mesh: Optional[Mesh], **kwargs) -> keras.optimizers.Optimizer:
  """`cls(**kwargs)`, a tf-keras optimizer; on a mesh, its DTensor form.

  On a mesh (`mesh=` of tf-keras' DTensor optimizers, `tf_keras.dtensor.experimental.optimizers`) its slots
  are built with `zeros_like(variable)`, so they take each variable's layout (sharded slots for sharded
  variables), and its step and learning rate are replicated DVariables. Checkpoints hold the same names
  either way.
  """
  return cls(**kwargs) if mesh is None else cls(mesh=mesh, **kwargs)


def split(x: tf.Tensor, parts: Sequence[tf.Tensor], mesh: Optional[Mesh]) -> List[tf.Tensor]:
  """`x` split along axis 0 into pieces the batch sizes of `parts` (the tensors concatenated into x's input).

  Off a mesh exactly `tf.split(x, [tf.shape(p)[0] for p in parts], axis=0)`. On a mesh DTensor's SplitV
  expansion gives pieces of inconsistent shapes once layout propagation shards a piece along the split axis
  (TF 2.21: "SPMD expansion resulted in op output inconsistent with the provided layout"), so there each
  piece is a static slice of `x` made whole, relayouted to `batch`-sharded like the labels it meets.
  """
  if mesh is None:
    return tf.split(x, [tf.shape(p)[0] for p in parts], axis=0)
  x = dtensor.relayout(x, Layout.replicated(mesh, x.shape.rank))
  pieces, start = [], 0
  for p in parts:
    size = p.shape[0]
    if size is None:
      raise ValueError("on a DTensor mesh every batch needs a static size (batch with drop_remainder=True)")
    pieces.append(dtensor.relayout(x[start:start + size], batch_sharded(mesh, x.shape.rank)))
    start += size
  return pieces
