"""Pieces every model family shares: input statistics, the standardising layer, initialisers, dtype rules.

Conventions for every model in `mpl_tf.models`:
- inputs are float images scaled to [0, 1]; the model standardises them itself (`Standardize`, first layer);
- outputs are logits (no softmax), float32 under a mixed-precision policy, the global float type otherwise;
- models are functional `keras.Model`s (DTensor's `LayoutMap.scope()` breaks subclassed models);
- weight decay is not in the model (no `kernel_regularizer`): the optimizer applies it.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mpl_tf.keras import keras

# Per-channel statistics of [0, 1] images. CIFAR-10 and ImageNet values are those of the official MPL code
# (google-research `meta_pseudo_labels/data_utils.py`, there multiplied by 255).
CIFAR10_MEAN = (0.491400, 0.482158, 0.4465309)
CIFAR10_STD = (0.247032, 0.243485, 0.26159)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# scikit-learn `load_digits()` images divided by 16 (all 1,797 images, one grey channel).
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)


def is_mixed_precision() -> bool:
  """True under a mixed policy (e.g. 'mixed_bfloat16'), where logits must be computed in float32."""
  policy = keras.mixed_precision.global_policy()
  return policy.compute_dtype != policy.variable_dtype


def float32_if_mixed() -> Optional[str]:
  """The `dtype=` for layers that must stay float32 under mixed precision (input standardising, logits).

  None (the global policy) otherwise, so that a float64 model stays float64 end to end.
  """
  return "float32" if is_mixed_precision() else None


@keras.utils.register_keras_serializable(package="mpl_tf")
class Standardize(keras.layers.Layer):
  """Per-channel `(x - mean) / std * scale` with constant statistics (no weights, nothing to adapt).

  Constants are created inside `call`, so the layer holds no eager tensor captured at build time and no
  variable for a DTensor layout map to place.

  Args:
    mean: one value, or one per channel.
    std: one positive value, or one per channel.
    scale: multiplies the standardised image (255 for keras.applications EfficientNets, which divide by 255).
  """

  def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.mean = tuple(float(v) for v in np.ravel(mean))
    self.std = tuple(float(v) for v in np.ravel(std))
    self.scale = float(scale)
    if not self.mean or len(self.mean) != len(self.std):
      raise ValueError(f"Standardize needs mean and std of the same non-zero length, got {mean} and {std}")
    if min(self.std) <= 0:
      raise ValueError(f"Standardize needs std > 0, got {std}")

  def build(self, input_shape):
    channels = input_shape[-1]
    if len(self.mean) not in (1, channels):
      raise ValueError(f"Standardize has {len(self.mean)} channel statistics for inputs with {channels} "
                       f"channels (shape {tuple(input_shape)}): give 1 or {channels} values")
    super().build(input_shape)

  def call(self, inputs):
    x = tf.cast(inputs, self.compute_dtype)
    mean = tf.constant(self.mean, dtype=x.dtype)
    factor = tf.constant([self.scale / s for s in self.std], dtype=x.dtype)
    return (x - mean) * factor

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(mean=list(self.mean), std=list(self.std), scale=self.scale)
    return config


def leaky_relu_from_output(x: tf.Tensor, alpha: float) -> tf.Tensor:
  """tf.nn.leaky_relu(x, alpha) for 0 < alpha <= 1, whose gradient is computed from the output y, not from x.

  TensorFlow's gradient of LeakyRelu is LeakyReluGrad(dy, x): dy where x > 0, alpha * dy elsewhere, so the
  backward pass keeps x alive. For 0 < alpha <= 1, y > 0 exactly when x > 0 (alpha * x rounds to 0 or below
  for x <= 0), so LeakyReluGrad(dy, y) is the same gradient bit for bit, and first and second derivatives
  (LeakyReluGrad has its own registered gradient) are unchanged. The backward then keeps y only, which the
  convolution that follows keeps anyway.
  """
  @tf.custom_gradient
  def forward(features):
    y = tf.nn.leaky_relu(features, alpha=alpha)

    def grad(dy):
      return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)
    return y, grad
  return forward(x)


@keras.utils.register_keras_serializable(package="mpl_tf")
class LeakyReLU(keras.layers.LeakyReLU):
  """Keras' LeakyReLU (same config, no weights) with its gradient taken from its output (`leaky_relu_from_output`).

  Why: in every batch norm -> leaky ReLU -> convolution unit (the WRN, the CNN), Keras' layer makes the backward
  pass keep three activation tensors: the batch norm's input (its own gradient needs it), the leaky ReLU's input
  and its output (the convolution's input). This layer drops the middle one: two tensors a unit instead of
  three in every training step of those networks, for the same values (BENCHMARKS.md, "Memory of a step").
  """

  def call(self, inputs):
    alpha = float(self.alpha)
    if not 0.0 < alpha <= 1.0:  # y > 0 <=> x > 0 needs a positive slope; alpha > 1 is a max() in TF
      return super().call(inputs)
    return leaky_relu_from_output(inputs, alpha)


def conv_initializer(seed: Optional[int] = None) -> keras.initializers.Initializer:
  """Official MPL conv init: N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels, not truncated."""
  return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)


def dense_initializer(seed: Optional[int] = None) -> keras.initializers.Initializer:
  """Official MPL dense init: U(-1/sqrt(n), 1/sqrt(n)) with n = `kernel.shape[-1]`, the number of OUTPUTS.

  (The official `_dense_kernel_initializer` uses shape[-1]; keras.applications' EfficientNet head does the same.)
  """
  return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_out", distribution="uniform", seed=seed)


def seed_for(seed: Optional[int], index: int) -> Optional[int]:
  """A distinct seed per layer (None stays None: unseeded initialisers)."""
  return None if seed is None else seed * 1000 + index


def check_bn_fused(bn_fused: Optional[bool]) -> Optional[bool]:
  if bn_fused not in (None, True, False):
    raise ValueError(f"bn_fused must be None (fused where the dtype allows it), True or False; got {bn_fused!r}")
  if bn_fused and keras.mixed_precision.global_policy().compute_dtype not in ("float16", "bfloat16", "float32"):
    raise ValueError("bn_fused=True needs a float16/bfloat16/float32 compute dtype (fused batch norm has no "
                     f"float64 kernel); the policy is {keras.mixed_precision.global_policy().name!r}. "
                     "Pass bn_fused=None or False.")
  return bn_fused


def check_common(num_classes: int, input_shape: Sequence[int], dropout: float,
                 rank: int = 3, min_size: int = 1) -> Tuple[int, ...]:
  """Validates the arguments every builder takes; returns input_shape as a tuple of ints."""
  if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
  try:
    shape = tuple(int(d) for d in input_shape)
  except (TypeError, ValueError):
    raise ValueError(f"input_shape must be a sequence of ints (no batch dimension), got {input_shape!r}") from None
  if len(shape) != rank or min(shape) < 1:
    raise ValueError(f"input_shape must be {rank} positive ints (height, width, channels), got {input_shape!r}")
  if min(shape[:2]) < min_size:
    raise ValueError(f"input_shape {shape}: height and width must be at least {min_size}")
  if not 0.0 <= float(dropout) < 1.0:
    raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
  return shape


def batch_norm_layers(model: keras.Model):
  return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def set_bn_fused(model: keras.Model, bn_fused: Optional[bool]) -> keras.Model:
  """Returns `model` with every BatchNormalization's `fused` set to `bn_fused` (None: leave as built).

  keras.applications builds its BatchNormalization layers with fused=None (fused where possible), and offers no
  argument to change that, so the model is re-created with `keras.models.clone_model`, each BN layer from its
  config with `fused` replaced. The clone has fresh, freshly initialised weights (these models are untrained
  anyway) and the same layer names; building it costs a second construction of the model.
  """
  check_bn_fused(bn_fused)
  if bn_fused is None or all(l.fused == bn_fused for l in batch_norm_layers(model)):
    return model

  def clone_layer(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
      config["fused"] = bn_fused
    return layer.__class__.from_config(config)

  return keras.models.clone_model(model, clone_function=clone_layer)
