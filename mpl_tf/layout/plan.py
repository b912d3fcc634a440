"""What a network stores sharded along `model`: the sharding plan by layer type, the gathered layers it
needs, tf-keras `LayoutMap`s, and the per-device bytes a placement implies."""
import dataclasses
import re
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from mpl_tf.keras import keras
from mpl_tf.layout.mesh import MODEL, UNSHARDED, Layout, Mesh

@dataclasses.dataclass(frozen=True)
class Placement:
  """Where one variable lives: its layout's sharding specs and why."""
  key: str                 # LayoutMap key: "<layer name>.<attribute>", e.g. "logits.kernel"
  shape: Tuple[int, ...]
  specs: Tuple[str, ...]   # per axis: "batch", "model" or "unsharded"
  how: str                 # "sharded" (computed sharded), "gathered" (stored sharded, gathered for use), "replicated"
  reason: str = ""

  @property
  def sharded(self) -> bool:
    return MODEL in self.specs


class GatheredConv2D(keras.layers.Conv2D):
  """A Conv2D whose kernel is stored sharded along `model` and gathered to replicated for the convolution.

  Same config and weights as `keras.layers.Conv2D` (it is one, with `single_device_class` naming what a
  single-device twin should be built as). Off a mesh, or when its kernel is replicated, it is a plain Conv2D.
  """

  single_device_class = keras.layers.Conv2D

  def convolution_op(self, inputs, kernel):
    layout = getattr(self, "_gather_layout", None)
    if layout is not None:
      kernel = dtensor.relayout(kernel, layout)
    return super().convolution_op(inputs, kernel)


class GatheredDense(keras.layers.Dense):
  """A Dense layer whose kernel and bias are stored sharded along `model` and gathered for the matmul.

  Dense tensors only (the layer's inputs in every model family here). Off a mesh it is a plain Dense.
  """

  single_device_class = keras.layers.Dense

  def call(self, inputs):
    layout = getattr(self, "_gather_layout", None)
    if layout is None:
      return super().call(inputs)
    inputs = tf.cast(inputs, self.compute_dtype)
    kernel = dtensor.relayout(tf.cast(self.kernel, self.compute_dtype), layout)
    outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]]) if inputs.shape.rank != 2 \
        else tf.matmul(inputs, kernel)
    if self.use_bias:
      bias = tf.cast(self.bias, self.compute_dtype)
      outputs = tf.nn.bias_add(outputs, dtensor.relayout(bias, Layout.replicated(layout.mesh, 1)))
    return self.activation(outputs) if self.activation is not None else outputs


def single_device_class(layer: keras.layers.Layer) -> type:
  """The plain Keras class a single-device twin of `layer` is built as (GatheredConv2D -> Conv2D)."""
  return getattr(type(layer), "single_device_class", type(layer))


def _divides(size: int, shards: int) -> bool:
  return shards > 1 and size % shards == 0


def sharding_plan(network: keras.Model, model_shards: int, dense: str = "sharded") -> List[Placement]:
  """Where every variable of `network` goes on a mesh with `model_shards` along `model` (see module doc).

  Rules by layer type (exact Keras classes: a subclass such as Conv2DTranspose stays replicated), the same for
  every model family (`FAMILY_NOTES` says what they mean for each). `dense` is how hidden Dense layers are
  sharded: 'sharded' (computed sharded) or 'gathered'.
  """
  plan = []
  outputs = set(network.output_names)
  for layer in network.layers:
    for attr, var in _layer_variables(layer):
      shape = tuple(int(d) for d in var.shape)
      key = f"{layer.name}.{attr}"
      specs, how, reason = (UNSHARDED,) * len(shape), "replicated", ""
      if model_shards > 1:
        if type(layer) in (keras.layers.Dense, GatheredDense) and attr in ("kernel", "bias"):
          if _divides(shape[-1], model_shards):
            # The output layer is gathered: logits sharded over classes run into DTensor expansion bugs
            # (SparseSoftmaxCrossEntropyWithLogits lowered to a GatherV2 whose layouts disagree).
            how = "gathered" if layer.name in outputs else dense
            specs = (UNSHARDED,) * (len(shape) - 1) + (MODEL,)
          else:
            reason = f"{shape[-1]} outputs do not split into {model_shards} shards"
        elif type(layer) in (keras.layers.Conv2D, GatheredConv2D) and attr == "kernel":
          if layer.groups != 1:
            reason = "grouped convolution: kept replicated"
          elif _divides(shape[-1], model_shards):
            specs, how = (UNSHARDED,) * 3 + (MODEL,), "gathered"
          else:
            reason = f"{shape[-1]} filters do not split into {model_shards} shards"
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
          reason = "depthwise convolution: its gradient has no DTensor layout propagation"
        elif isinstance(layer, keras.layers.BatchNormalization):
          reason = "batch norm: small, and per-channel sharding would shard the activations"
        elif type(layer) in (keras.layers.Conv2D, GatheredConv2D):
          reason = "conv bias: small, added after the gathered convolution"
        elif layer.weights:
          reason = f"{type(layer).__name__}: no rule, kept replicated"
      plan.append(Placement(key, shape, specs, how, reason))
  return plan


FAMILY_NOTES = {
    "mlp": "hidden Dense kernels and biases sharded on their outputs and computed sharded (tensor parallel); "
           "the logits layer stored sharded and gathered; sizes that do not divide replicated",
    "cnn": "the 3 conv kernels stored sharded on their filters and gathered for use; logits gathered when the "
           "class count divides; batch norm replicated",
    "wide_resnet": "all 27 conv kernels (stem, 3x3, 1x1 shortcuts) gathered: >99.5% of the weights; batch norm "
                   "replicated; logits gathered when the class count divides",
    "resnet": "all 53 conv kernels gathered; conv biases (keras.applications convs have them) and batch norm "
              "replicated; the 2048 x classes logits gathered when the class count divides",
    "efficientnet": "stem, 1x1 expand/project/squeeze-excite and head conv kernels gathered; depthwise kernels "
                    "(grouped convs, grouped_depthwise=True on a mesh) replicated; logits gathered",
}


def _layer_variables(layer) -> List[Tuple[str, tf.Variable]]:
  """(attribute, variable) pairs of a layer's own weights, attribute as LayoutMap keys name it."""
  out = []
  for var in layer.weights:
    attr = var.name.split("/")[-1].split(":")[0]
    out.append((attr, var))
  return out


def layout_map(network: keras.Model, mesh: Mesh):
  """A tf-keras `LayoutMap` for `network` on `mesh`: exact keys for every variable the plan shards."""
  lm = keras.dtensor.experimental.LayoutMap(mesh=mesh)
  for p in sharding_plan(network, mesh.dim_size(MODEL)):
    if p.sharded:
      lm[re.escape(p.key) + "$"] = Layout(list(p.specs), mesh)
  return lm


def describe(network: keras.Model, mesh: Optional[Mesh]) -> str:
  """A table of the plan: variable, shape, placement and reason."""
  shards = mesh.dim_size(MODEL) if mesh is not None else 1
  rows = [f"{p.key:40s} {str(p.shape):22s} {p.how:10s} {p.reason}" for p in sharding_plan(network, shards)]
  return "\n".join(rows)


def local_shape(shape: Sequence[int], specs: Sequence[str], mesh: Mesh) -> Tuple[int, ...]:
  return tuple(d // (mesh.dim_size(s) if s != UNSHARDED else 1) for d, s in zip(shape, specs))


def per_device_bytes(variables: Iterable[tf.Variable]) -> int:
  """Bytes that `variables` take on each device: the size of each variable's local shard (its full size
  off a mesh). Computed from the layouts, not measured from an allocator."""
  total, seen = 0, set()
  for v in variables:
    if id(v) in seen:
      continue
    seen.add(id(v))
    shape = tuple(int(d) for d in v.shape)
    if isinstance(v, dtensor.DVariable):
      shape = local_shape(shape, v.layout.sharding_specs, v.layout.mesh)
    total += int(np.prod(shape, dtype=np.int64)) * v.dtype.size
  return total
