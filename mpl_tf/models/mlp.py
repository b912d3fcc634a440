"""The fully connected network of the paper's TwoMoon experiment (section 3.1).

Teacher and student alike: 2 hidden layers of 8 units, sigmoid, weights initialised U(-0.1, 0.1), logits out.
The paper does not say how biases start; we draw them from the same uniform, which also breaks the symmetry
between the two output units.
"""
from typing import Sequence, Tuple

from mpl_tf.keras import keras


def build_mlp(num_classes: int, input_shape: Tuple[int, ...], hidden: Sequence[int] = (8, 8),
              activation: str = "sigmoid", init_scale: float = 0.1, seed: int = None,
              name: str = "mlp") -> keras.Model:
  """A functional MLP returning logits; `seed` makes the initialisation reproducible on its own."""
  if num_classes < 2:
    raise ValueError(f"build_mlp needs num_classes >= 2, got {num_classes}")
  inputs = keras.Input(shape=tuple(input_shape), name="inputs")
  x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
  sizes = list(hidden) + [num_classes]
  for i, units in enumerate(sizes):
    layer_seed = None if seed is None else seed * 1000 + i
    init = keras.initializers.RandomUniform(-init_scale, init_scale, seed=layer_seed)
    bias_init = keras.initializers.RandomUniform(
        -init_scale, init_scale, seed=None if layer_seed is None else layer_seed + 500)
    last = i == len(sizes) - 1
    x = keras.layers.Dense(units, activation=None if last else activation, kernel_initializer=init,
                           bias_initializer=bias_init, dtype="float32" if last and _mixed() else None,
                           name="logits" if last else f"dense_{i}")(x)
  return keras.Model(inputs, x, name=name)


def _mixed() -> bool:
  """True under a mixed-precision policy, where the logits layer must compute in float32."""
  policy = keras.mixed_precision.global_policy()
  return policy.compute_dtype != policy.variable_dtype
