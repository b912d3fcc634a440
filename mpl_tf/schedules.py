"""Learning-rate schedules: linear warmup then cosine decay, and the student's wait steps.

The official MPL recipe gives teacher and student separate clocks: the student's learning rate is held at 0
for `wait_steps`, then runs its own warmup and cosine from there (official `common_utils.get_learning_rate`;
docs/official_recipe.md). The wait is part of the schedule the optimizer is built with (`WarmupCosine`, or
`Delayed` around a constant rate): a zero learning rate also zeroes tf-keras' decoupled weight decay and leaves
momentum untouched, so the student does not move at all while it waits.
"""
import math
from typing import Union

import tensorflow as tf

from mpl_tf.keras import keras

LearningRate = Union[float, tf.Variable, keras.optimizers.schedules.LearningRateSchedule]


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """0 for `wait_steps`, then linear warmup to `base_lr` over `warmup_steps`, then cosine to `min_lr`.

  The cosine spans the `total_steps - wait_steps - warmup_steps` steps left after the wait and warmup and
  stays at `min_lr` afterwards.
  """

  def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, wait_steps: int = 0,
               min_lr: float = 0.0):
    super().__init__()
    if total_steps <= wait_steps + warmup_steps:
      raise ValueError(f"WarmupCosine needs total_steps ({total_steps}) > wait_steps ({wait_steps}) + "
                       f"warmup_steps ({warmup_steps})")
    self.base_lr, self.total_steps, self.min_lr = base_lr, total_steps, min_lr
    self.warmup_steps, self.wait_steps = warmup_steps, wait_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32) - float(self.wait_steps)
    warm = float(max(self.warmup_steps, 1))
    warmup = self.base_lr * tf.minimum(1.0, (step + 1.0) / warm) if self.warmup_steps else self.base_lr
    decay_steps = float(self.total_steps - self.wait_steps - self.warmup_steps)
    progress = tf.clip_by_value((step - float(self.warmup_steps)) / decay_steps, 0.0, 1.0)
    cosine = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + tf.cos(math.pi * progress))
    lr = tf.where(step < float(self.warmup_steps), warmup, cosine)
    return tf.where(step < 0.0, 0.0, lr)

  def get_config(self):
    return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "wait_steps": self.wait_steps, "min_lr": self.min_lr}


class Delayed(keras.optimizers.schedules.LearningRateSchedule):
  """Wraps any learning rate so that it is 0 for the first `wait_steps` optimizer steps.

  After the wait the inner schedule sees step - wait_steps, so its own warmup starts when the wait ends.
  """

  def __init__(self, inner: LearningRate, wait_steps: int):
    super().__init__()
    self.inner, self.wait_steps = inner, wait_steps

  def __call__(self, step):
    shifted = tf.maximum(tf.cast(step, tf.int64) - self.wait_steps, 0)
    inner = self.inner(shifted) if callable(self.inner) else self.inner
    inner = tf.cast(tf.convert_to_tensor(inner), tf.float32)
    return tf.where(tf.cast(step, tf.int64) < self.wait_steps, tf.zeros_like(inner), inner)

  def get_config(self):
    return {"inner": self.inner, "wait_steps": self.wait_steps}


def learning_rate_at(optimizer: keras.optimizers.Optimizer, step=None) -> tf.Tensor:
  """The learning rate the optimizer will use for its next step (or at `step`), as a float32 tensor.

  `optimizer.learning_rate` reports the rate of the previous step for schedules; the MPL feedback needs the
  rate of the step about to be taken.
  """
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a mixed_float16 LossScaleOptimizer
  lr = optimizer._learning_rate  # pylint: disable=protected-access
  if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
    return tf.cast(lr(optimizer.iterations if step is None else step), tf.float32)
  return tf.cast(tf.convert_to_tensor(lr), tf.float32)
