"""WRN-28-k exactly as the official MPL code builds it (google-research `meta_pseudo_labels/modeling.py`, `Wrn28k`,
and `modeling_utils.py`, `wrn_block`), as a functional tf-keras model.

Architecture, for width k (WRN-28-2: k = 2, 1,475,818 parameters of which 1,472,170 trainable, 10 classes):
  Standardize (per-channel mean/std, CIFAR-10 statistics by default)
  stem:   conv 3x3, 16k channels (32 for k = 2: the official stem is 16k, not the 16 of Zagoruyko & Komodakis)
  group 1: 4 pre-activation blocks, 16k channels, stride 1 (the first needs no projection: stem is 16k already)
  group 2: 4 blocks, 32k channels, the first with stride 2
  group 3: 4 blocks, 64k channels, the first with stride 2
  head:   BN, leaky ReLU, global average pooling, dropout, dense -> logits
Block: a = lrelu(BN(x)); y = conv3x3(a, stride); y = conv3x3(lrelu(BN(y))); shortcut = conv1x1(a, stride) when
the stride or width changes, else x; out = y + shortcut. No conv has a bias; no BN after the stem.
Leaky ReLU slope 0.2 everywhere; BN decay (Keras `momentum`) 0.99, epsilon 1e-3; dropout 0.2 (the CIFAR runs;
the official flag's default is 0.1); conv kernels N(0, sqrt(2 / fan_out)); dense kernel U(+-1/sqrt(num_classes)),
bias 0. The official SAME padding with stride 2 is Keras padding='same'.
"""
from typing import Optional, Sequence

from mpl_tf.keras import keras
from mpl_tf.models import common


def build_wrn28(num_classes: int, input_shape: Sequence[int], width: int = 2, dropout: float = 0.2,
                bn_fused: Optional[bool] = None, bn_momentum: float = 0.99, bn_epsilon: float = 1e-3,
                leaky_slope: float = 0.2, mean: Sequence[float] = common.CIFAR10_MEAN,
                std: Sequence[float] = common.CIFAR10_STD, seed: Optional[int] = None,
                name: Optional[str] = None) -> keras.Model:
  """Builds WRN-28-`width` returning logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels) of [0, 1] images, e.g. (32, 32, 3).
    width: the widening factor k (channels 16k, 32k, 64k).
    dropout: rate before the final dense layer.
    bn_fused: passed as `fused=` to every BatchNormalization. None: fused wherever the dtype allows it (every
      float16/bfloat16/float32 model; float64 has no fused kernel). False: unfused, needed on a DTensor mesh.
    bn_momentum, bn_epsilon: batch-norm moving-average decay and epsilon (official 0.99, 1e-3).
    leaky_slope: negative slope of every leaky ReLU (official 0.2).
    mean, std: per-channel statistics of [0, 1] inputs used by the first layer.
    seed: makes the initialisation reproducible on its own (None: Keras' global random state).
    name: model name, default `wrn28_<width>`.
  """
  shape = common.check_common(num_classes, input_shape, dropout)
  if not isinstance(width, int) or isinstance(width, bool) or width < 1:
    raise ValueError(f"width (the k of WRN-28-k) must be an int >= 1, got {width!r}")
  common.check_bn_fused(bn_fused)
  widths = (16 * width, 32 * width, 64 * width)
  counter = iter(range(1000))

  def conv(x, filters, kernel, stride, label):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_initializer=common.conv_initializer(common.seed_for(seed, next(counter))),
                               name=label)(x)

  def bn_act(x, label):
    x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, fused=bn_fused,
                                        name=f"{label}_bn")(x)
    return common.LeakyReLU(alpha=leaky_slope, name=f"{label}_lrelu")(x)

  inputs = keras.Input(shape=shape, name="images")
  x = common.Standardize(mean, std, dtype=common.float32_if_mixed(), name="standardize")(inputs)
  x = conv(x, widths[0], 3, 1, "stem_conv")

  block = 0
  for group, filters in enumerate(widths):
    for i in range(4):
      block += 1
      label = f"block{block}"
      stride = 2 if group > 0 and i == 0 else 1
      project = stride != 1 or x.shape[-1] != filters
      a = bn_act(x, f"{label}_1")
      y = conv(a, filters, 3, stride, f"{label}_1_conv")
      y = bn_act(y, f"{label}_2")
      y = conv(y, filters, 3, 1, f"{label}_2_conv")
      shortcut = conv(a, filters, 1, stride, f"{label}_shortcut_conv") if project else x
      x = keras.layers.Add(name=f"{label}_add")([y, shortcut])

  x = bn_act(x, "head")
  x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
  x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  outputs = keras.layers.Dense(num_classes, kernel_initializer=common.dense_initializer(common.seed_for(seed, 999)),
                               bias_initializer="zeros", dtype=common.float32_if_mixed(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name or f"wrn28_{width}")
