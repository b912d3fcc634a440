"""ResNet-50 from `keras.applications.ResNet50` (untrained), standardising [0, 1] inputs, returning logits.

The backbone is `ResNet50(include_top=False, weights=None, pooling="avg")` built on our `Standardize` layer
(`input_tensor=`), so the model is one flat functional graph: 23,587,712 backbone parameters (23,534,592 trainable),
then dropout (the official ImageNet MPL runs use 0.1) and a dense head like keras.applications' own top
(glorot-uniform kernel, zero bias), 2048 * num_classes + num_classes parameters.
keras.applications builds its BatchNormalization layers with fused=None and no way to change it: `bn_fused`
other than None re-creates the model with `keras.models.clone_model` (see `common.set_bn_fused`).
Note: keras.applications' ResNet50 is the standard ReLU ResNet-50 v1 (BN epsilon 1.001e-5, momentum 0.99),
not the official MPL re-implementation; the parameter count is the same.
"""
from typing import Optional, Sequence

from mpl_tf.keras import keras
from mpl_tf.models import common


def build_resnet50(num_classes: int, input_shape: Sequence[int], dropout: float = 0.0,
                   bn_fused: Optional[bool] = None, mean: Sequence[float] = common.IMAGENET_MEAN,
                   std: Sequence[float] = common.IMAGENET_STD, name: str = "resnet50") -> keras.Model:
  """Builds an untrained ResNet-50 returning logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, 3) of [0, 1] images; at least 32x32 (a keras.applications limit).
    dropout: rate before the final dense layer (0: no dropout, like keras.applications).
    bn_fused: None (as keras.applications builds it: fused where the dtype allows), True or False.
    mean, std: per-channel statistics of [0, 1] inputs (ImageNet by default).
    name: model name.
  """
  shape = common.check_common(num_classes, input_shape, dropout, min_size=32)
  common.check_bn_fused(bn_fused)
  inputs = keras.Input(shape=shape, name="images")
  x = common.Standardize(mean, std, dtype=common.float32_if_mixed(), name="standardize")(inputs)
  backbone = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=x, pooling="avg")
  x = backbone.output
  if dropout > 0:
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  outputs = keras.layers.Dense(num_classes, dtype=common.float32_if_mixed(), name="logits")(x)
  return common.set_bn_fused(keras.Model(inputs, outputs, name=name), bn_fused)
