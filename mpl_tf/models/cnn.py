"""A small CNN for scikit-learn's `load_digits()` (8x8x1 images, 10 classes), fast enough to train on a CPU.

Standardize (digits statistics) -> [conv 3x3 -> BN -> leaky ReLU] x 3 (32, 64 with stride 2, 64 channels)
-> global average pooling -> dropout -> dense logits. 56,874 parameters (56,554 trainable) with the defaults
and 10 classes.
Same initialisers, BN settings and leaky-ReLU slope as the WRN, so it is a cheap stand-in for it in tests.
"""
import math
from typing import Optional, Sequence, Tuple, Union

from mpl_tf.keras import keras
from mpl_tf.models import common


def build_cnn_small(num_classes: int, input_shape: Sequence[int] = (8, 8, 1), widths: Sequence[int] = (32, 64, 64),
                    strides: Union[str, Sequence[int]] = (1, 2, 1), dropout: float = 0.2,
                    bn_fused: Optional[bool] = None,
                    bn_momentum: float = 0.99, bn_epsilon: float = 1e-3, leaky_slope: float = 0.2,
                    mean: Sequence[float] = common.DIGITS_MEAN, std: Sequence[float] = common.DIGITS_STD,
                    seed: Optional[int] = None, name: str = "cnn_small") -> keras.Model:
  """Builds the small CNN returning logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels) of [0, 1] images, (8, 8, 1) for digits (digits / 16).
    widths, strides: channels and stride of each conv layer (same length); strides='auto' picks them from the
      image size (`auto_strides`): (1, 2, 1) at 8x8, (2, 2, 2) at 28x28 or 32x32, so any image size costs about
      what digits cost and ends on a 4x4 map.
    dropout: rate before the final dense layer.
    bn_fused: passed as `fused=` to every BatchNormalization (None: fused where the dtype allows).
    bn_momentum, bn_epsilon, leaky_slope: as in the WRN.
    mean, std: statistics of [0, 1] inputs (one value, or one per channel).
    seed: makes the initialisation reproducible on its own.
    name: model name.
  """
  shape = common.check_common(num_classes, input_shape, dropout)
  if strides == "auto":
    strides = auto_strides(shape, len(tuple(widths)))
  widths, strides = tuple(widths), tuple(strides)
  if not widths or len(widths) != len(strides) or min(widths) < 1 or min(strides) < 1:
    raise ValueError(f"widths and strides must be non-empty, of the same length, positive; got {widths}, {strides}")
  common.check_bn_fused(bn_fused)
  inputs = keras.Input(shape=shape, name="images")
  x = common.Standardize(mean, std, dtype=common.float32_if_mixed(), name="standardize")(inputs)
  for i, (filters, stride) in enumerate(zip(widths, strides)):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=common.conv_initializer(common.seed_for(seed, i)),
                            name=f"conv{i + 1}")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, fused=bn_fused,
                                        name=f"conv{i + 1}_bn")(x)
    x = common.LeakyReLU(alpha=leaky_slope, name=f"conv{i + 1}_lrelu")(x)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(num_classes, kernel_initializer=common.dense_initializer(common.seed_for(seed, 999)),
                               dtype=common.float32_if_mixed(), name="logits")(x)
  return keras.Model(inputs, outputs, name=name)


def auto_strides(input_shape: Sequence[int], num_layers: int) -> Tuple[int, ...]:
  """Strides for `num_layers` convs: k = ceil(log2(side / 4)) of them stride 2 (at least 1, at most all), so the
  last map is about 4x4; with k = 1 the stride-2 conv is the middle one (the digits network)."""
  side = min(int(input_shape[0]), int(input_shape[1]))
  k = min(num_layers, max(1, math.ceil(math.log2(max(side, 1) / 4.0))))
  if k == 1:
    middle = num_layers // 2
    return tuple(2 if i == middle else 1 for i in range(num_layers))
  return tuple(2 if i < k else 1 for i in range(num_layers))
