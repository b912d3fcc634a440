"""EfficientNet-B0..B7: keras.applications' architecture, layer for layer, rebuilt here to run under DTensor.

Why not call `keras.applications.EfficientNetB0` directly: its stem holds an adaptable `Normalization` layer whose
build reshapes its own (lazily created) variables, and that fails inside `LayoutMap.scope()`
("Input to reshape is a tensor with 0 values"), so the applications model cannot even be built for a DTensor
mesh. It also builds every BatchNormalization with fused=None and offers no `fused=`.
This file reproduces `tf_keras/src/applications/efficientnet.py` (`EfficientNet`, `block`, `DEFAULT_BLOCKS_ARGS`,
initialisers, layer names and configs) without that Rescaling/Normalization prefix; tests/models/test_models.py
checks that weight names, shapes, layer configs and outputs match keras.applications' model (weights copied in).

On a DTensor mesh (TF 2.21), DepthwiseConv2D runs forward but its gradient fails
(`DepthwiseConv2dNativeBackpropInput` "does not implement layout propagation"); `grouped_depthwise=True` builds
each depthwise conv as the equivalent grouped Conv2D, which trains there (B0, 1x2 CPU mesh, bn_fused=False).

Our first layer standardises [0, 1] inputs with ImageNet statistics (keras.applications' untrained model only
divides by 255: its Normalization is the identity until adapted). The head is keras.applications' top: global
average pooling ("avg_pool"), dropout (per-variant default, 0.2 for B0 up to 0.5 for B7), dense with
U(+-1/sqrt(num_classes)) kernel (the official MPL dense init too), named "logits".
Backbone parameters (everything before the head; keras.applications' counts less its Normalization's 7):
B0 4,049,564 ... B7 64,097,680; head (1280 * width, rounded to 8) * n + n.
"""
import math
from typing import Optional, Sequence

from mpl_tf.keras import keras
from mpl_tf.models import common

# variant -> (width coefficient, depth coefficient, native resolution, default head dropout), as keras.applications.
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

# (kernel size, repeats, filters in, filters out, expand ratio, stride); se_ratio 0.25 and id_skip everywhere.
BLOCKS = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25
DEPTH_DIVISOR = 8


def _conv_init():
  # keras.applications' CONV_KERNEL_INITIALIZER (truncated, unlike the official MPL WRN init).
  return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="truncated_normal")


def _correct_pad(x, kernel_size: int):
  """keras.applications' `imagenet_utils.correct_pad`: TF 'SAME' padding for a stride-2 'valid' convolution."""
  size = x.shape[1:3]
  adjust = (1, 1) if size[0] is None else (1 - size[0] % 2, 1 - size[1] % 2)
  c = kernel_size // 2
  return ((c - adjust[0], c), (c - adjust[1], c))


def _round_filters(filters: float, width: float) -> int:
  filters *= width
  new = max(DEPTH_DIVISOR, int(filters + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
  if new < 0.9 * filters:
    new += DEPTH_DIVISOR
  return int(new)


def _round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def _depthwise(x, kernel_size, strides, padding, grouped, name):
  """A depthwise 3x3/5x5 conv; `grouped`: the same map as a Conv2D with one group per channel.

  DepthwiseConv2D's kernel is (k, k, C, 1), the grouped Conv2D's (k, k, 1, C) (the same numbers, transposed).
  Keras' fan_out of the first equals the fan_in of the second (k * k), so the initialisation is the same too.
  """
  if not grouped:
    return keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False,
                                        depthwise_initializer=_conv_init(), name=name)(x)
  init = keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="truncated_normal")
  return keras.layers.Conv2D(x.shape[-1], kernel_size, strides=strides, padding=padding, groups=x.shape[-1],
                             use_bias=False, kernel_initializer=init, name=name)(x)


def _block(inputs, bn, grouped, drop_rate, name, filters_in, filters_out, kernel_size, strides, expand_ratio):
  """keras.applications' inverted residual block (MBConv with squeeze-and-excitation)."""
  filters = filters_in * expand_ratio
  x = inputs
  if expand_ratio != 1:
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                            name=name + "expand_conv")(x)
    x = bn(name + "expand_bn")(x)
    x = keras.layers.Activation("swish", name=name + "expand_activation")(x)
  if strides == 2:
    x = keras.layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=name + "dwconv_pad")(x)
  x = _depthwise(x, kernel_size, strides, "valid" if strides == 2 else "same", grouped, name + "dwconv")
  x = bn(name + "bn")(x)
  x = keras.layers.Activation("swish", name=name + "activation")(x)

  filters_se = max(1, int(filters_in * SE_RATIO))
  se = keras.layers.GlobalAveragePooling2D(name=name + "se_squeeze")(x)
  se = keras.layers.Reshape((1, 1, filters), name=name + "se_reshape")(se)
  se = keras.layers.Conv2D(filters_se, 1, padding="same", activation="swish", kernel_initializer=_conv_init(),
                           name=name + "se_reduce")(se)
  se = keras.layers.Conv2D(filters, 1, padding="same", activation="sigmoid", kernel_initializer=_conv_init(),
                           name=name + "se_expand")(se)
  x = keras.layers.Multiply(name=name + "se_excite")([x, se])

  x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                          name=name + "project_conv")(x)
  x = bn(name + "project_bn")(x)
  if strides == 1 and filters_in == filters_out:
    if drop_rate > 0:
      x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
    x = keras.layers.Add(name=name + "add")([x, inputs])
  return x


def build_efficientnet(variant: str, num_classes: int, input_shape: Sequence[int],
                       dropout: Optional[float] = None, drop_connect_rate: float = 0.2,
                       bn_fused: Optional[bool] = None, grouped_depthwise: bool = False,
                       mean: Sequence[float] = common.IMAGENET_MEAN, std: Sequence[float] = common.IMAGENET_STD,
                       name: Optional[str] = None) -> keras.Model:
  """Builds an untrained EfficientNet-`variant` returning logits.

  Args:
    variant: 'b0' .. 'b7'.
    num_classes: number of logits.
    input_shape: (height, width, channels) of [0, 1] images (any size; native sizes in `VARIANTS`).
    dropout: rate before the final dense layer; None: the variant's keras.applications default.
    drop_connect_rate: stochastic-depth rate reached by the last block (keras.applications default 0.2).
    bn_fused: passed as `fused=` to every BatchNormalization. None: fused where the dtype allows it.
      BN settings otherwise keras.applications' defaults (momentum 0.99, epsilon 1e-3).
    grouped_depthwise: build each depthwise conv as a Conv2D with groups = channels (kernel (k, k, 1, C)
      instead of (k, k, C, 1), same function and init). Needed to train on a DTensor mesh, where
      DepthwiseConv2dNativeBackpropInput has no layout propagation (TF 2.21); default False (keras.applications).
    mean, std: per-channel statistics of [0, 1] inputs (ImageNet by default).
    name: model name, default `efficientnet_<variant>`.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown EfficientNet variant {variant!r}; known: {sorted(VARIANTS)}")
  width, depth, _, default_dropout = VARIANTS[variant]
  dropout = default_dropout if dropout is None else dropout
  shape = common.check_common(num_classes, input_shape, dropout)
  if not 0.0 <= float(drop_connect_rate) < 1.0:
    raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
  common.check_bn_fused(bn_fused)

  def bn(label):
    return keras.layers.BatchNormalization(axis=-1, fused=bn_fused, name=label)

  inputs = keras.Input(shape=shape, name="images")
  x = common.Standardize(mean, std, dtype=common.float32_if_mixed(), name="standardize")(inputs)
  x = keras.layers.ZeroPadding2D(padding=_correct_pad(x, 3), name="stem_conv_pad")(x)
  x = keras.layers.Conv2D(_round_filters(32, width), 3, strides=2, padding="valid", use_bias=False,
                          kernel_initializer=_conv_init(), name="stem_conv")(x)
  x = bn("stem_bn")(x)
  x = keras.layers.Activation("swish", name="stem_activation")(x)

  num_blocks = float(sum(_round_repeats(b[1], depth) for b in BLOCKS))
  b = 0
  for i, (kernel_size, repeats, filters_in, filters_out, expand_ratio, strides) in enumerate(BLOCKS):
    filters_in, filters_out = _round_filters(filters_in, width), _round_filters(filters_out, width)
    for j in range(_round_repeats(repeats, depth)):
      x = _block(x, bn, grouped_depthwise, drop_connect_rate * b / num_blocks, f"block{i + 1}{chr(j + 97)}_",
                 filters_in if j == 0 else filters_out, filters_out, kernel_size,
                 strides if j == 0 else 1, expand_ratio)
      b += 1

  x = keras.layers.Conv2D(_round_filters(1280, width), 1, padding="same", use_bias=False,
                          kernel_initializer=_conv_init(), name="top_conv")(x)
  x = bn("top_bn")(x)
  x = keras.layers.Activation("swish", name="top_activation")(x)
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  if dropout > 0:
    x = keras.layers.Dropout(dropout, name="top_dropout")(x)
  outputs = keras.layers.Dense(num_classes, kernel_initializer=common.dense_initializer(),
                               dtype=common.float32_if_mixed(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name or f"efficientnet_{variant}")
