"""UDA (Xie et al. 2020): supervised cross-entropy plus consistency between weak and strong views.

Used on its own as a baseline (`UDAModel`) and as the MPL teacher's auxiliary objective (`uda_objective`,
called by `MetaPseudoLabelsModel`), so both train the very same teacher loss.
"""
from typing import Dict, Optional

import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.keras import keras


def uda_objective(network: keras.Model, x_l: tf.Tensor, y_l: tf.Tensor, u_weak: tf.Tensor,
                  u_strong: Optional[tf.Tensor], step: tf.Tensor, *, label_smoothing: float = 0.0,
                  supervised_weight: float = 1.0, uda_weight: float = 0.0, uda_ramp_steps: int = 0,
                  uda_temperature: float = 1.0, uda_threshold: float = 0.0) -> Dict[str, tf.Tensor]:
  """One training-mode forward of `network` on [x_l, x_u_weak(, x_u_strong)] and its losses.

  The batches are concatenated into one call, as in the official code, so batch norm sees labeled and
  unlabeled images together and its moving statistics are updated once per step. UDA's consistency term
  needs both views; it is skipped when `uda_weight` is 0 or there is no strong view.
  Returns the logits of each part (`labeled`, `weak`, `strong`: the last equals `weak` with one view),
  `supervised_loss`, `uda_loss`, `uda_mask_ratio`, `uda_weight` and their weighted sum `loss`.
  """
  parts = [x_l, u_weak] + ([u_strong] if u_strong is not None else [])
  # tf.split into the parts' batch sizes (a DTensor-safe split on a mesh: mpl_tf.layout.split).
  logits = layout.split(network(tf.concat(parts, axis=0), training=True), parts, layout.mesh_of(network))
  out = {"labeled": logits[0], "weak": logits[1], "strong": logits[2] if u_strong is not None else logits[1]}
  sup = tf.reduce_mean(losses.cross_entropy(y_l, out["labeled"], label_smoothing))
  out["supervised_loss"] = sup
  out["loss"] = supervised_weight * sup
  if uda_weight > 0 and u_strong is not None:
    uda, mask_ratio = losses.uda_consistency(out["weak"], out["strong"], uda_temperature, uda_threshold)
    weight = uda_weight * losses.linear_ramp(step, uda_ramp_steps)
    out.update(uda_loss=uda, uda_mask_ratio=mask_ratio, uda_weight=weight)
    out["loss"] = out["loss"] + tf.cast(weight, uda.dtype) * uda
  return out


class UDAModel(SemiSupervisedModel):
  """A single network trained with supervised CE + UDA consistency (the paper's UDA baseline).

  Elements must carry two views: ((x_l, y_l), (x_u_weak, x_u_strong)). Compile with `optimizer=`.
  Args mirror the MPL teacher's UDA options: `uda_weight` (official CIFAR: 8) ramped linearly over
  `uda_ramp_steps`, `uda_temperature` (0.7), `uda_threshold` (0.6), `label_smoothing`, `ema_decay`,
  `grad_clip_norm`.
  """

  def __init__(self, network: keras.Model, uda_weight: float = 1.0, uda_ramp_steps: int = 0,
               uda_temperature: float = 1.0, uda_threshold: float = 0.0, label_smoothing: float = 0.0,
               ema_decay: float = 0.0, grad_clip_norm: float = 0.0, **kwargs):
    super().__init__(student=network, ema_decay=ema_decay, **kwargs)
    self.options = dict(label_smoothing=label_smoothing, uda_weight=uda_weight, uda_ramp_steps=uda_ramp_steps,
                        uda_temperature=uda_temperature, uda_threshold=uda_threshold)
    self.grad_clip_norm = grad_clip_norm

  def train_step(self, data):
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_strong is None:
      raise ValueError("UDAModel needs two unlabeled views per element: ((x_l, y_l), (x_u_weak, x_u_strong))")
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      out = uda_objective(self.student, x_l, y_l, u_weak, u_strong, self.global_step, **self.options)
    grads = self._clip(self._gradients(tape, out["loss"], variables, self.optimizer), self.grad_clip_norm)
    self.optimizer.apply_gradients(zip(grads, variables))
    self._track("student/loss", out["loss"])
    self._track("student/supervised_loss", out["supervised_loss"])
    if "uda_loss" in out:
      self._track("uda/loss", out["uda_loss"])
      self._track("uda/mask_ratio", out["uda_mask_ratio"])
    return self._finish_step()
