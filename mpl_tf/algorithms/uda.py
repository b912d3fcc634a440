"""UDA (Xie et al. 2020): supervised cross-entropy plus consistency between weak and strong views.

Used on its own as a baseline (`UDAModel`) and as the MPL teacher's auxiliary objective (`uda_objective`,
called by `MetaPseudoLabelsModel`), so both train the very same teacher loss, from one `UDASettings` (bound once
in gin as `uda.*` and handed to whichever method the run trains).
"""
import dataclasses
from typing import Dict, List, NamedTuple, Optional

import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.base import SemiSupervisedModel, unpack
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.algorithms.pseudo_labels import distill
from mpl_tf.algorithms.supervised import finetune
from mpl_tf.keras import keras


@dataclasses.dataclass(frozen=True)
class UDASettings:
  """UDA's consistency term: weight (ramped linearly from 0 over `ramp_steps`), the temperature that sharpens
  the weak view's target and the confidence `threshold` below which an image is masked out (official CIFAR:
  8, 5000, 0.7, 0.6). A weight of 0 turns the term off."""
  weight: float = 1.0
  ramp_steps: int = 0
  temperature: float = 1.0
  threshold: float = 0.0

  def __post_init__(self):
    if self.weight < 0 or self.ramp_steps < 0 or self.temperature <= 0 or not 0 <= self.threshold <= 1:
      raise ValueError(f"UDA settings out of range: {self} (weight >= 0, ramp_steps >= 0, temperature > 0, "
                       "threshold in [0, 1])")


NO_UDA = UDASettings(weight=0.0)


class Objective(NamedTuple):
  """One training-mode forward of a network on [x_l, x_u_weak(, x_u_strong)] and its losses (`uda_objective`).
  The UDA fields are None when the consistency term is off."""
  loss: tf.Tensor                 # supervised_weight * supervised_loss (+ uda_weight * uda_loss)
  supervised_loss: tf.Tensor
  labeled: tf.Tensor              # logits of each part; `strong` is `weak` with one view
  weak: tf.Tensor
  strong: tf.Tensor
  uda_loss: Optional[tf.Tensor] = None
  uda_mask_ratio: Optional[tf.Tensor] = None
  uda_weight: Optional[tf.Tensor] = None


def uda_objective(network: keras.Model, x_l: tf.Tensor, y_l: tf.Tensor, u_weak: tf.Tensor,
                  u_strong: Optional[tf.Tensor], step: tf.Tensor, *, uda: UDASettings = NO_UDA,
                  label_smoothing: float = 0.0, supervised_weight: float = 1.0) -> Objective:
  """One training-mode forward of `network` on [x_l, x_u_weak(, x_u_strong)] and its losses.

  The batches are concatenated into one call, as in the official code, so batch norm sees labeled and
  unlabeled images together and its moving statistics are updated once per step. UDA's consistency term
  needs both views; it is skipped when `uda.weight` is 0 or there is no strong view.
  """
  parts = [x_l, u_weak] + ([u_strong] if u_strong is not None else [])
  # tf.split into the parts' batch sizes (a DTensor-safe split on a mesh: mpl_tf.layout.split).
  logits = layout.split(network(tf.concat(parts, axis=0), training=True), parts, layout.mesh_of(network))
  strong = logits[2] if u_strong is not None else logits[1]
  sup = tf.reduce_mean(losses.cross_entropy(y_l, logits[0], label_smoothing))
  out = Objective(loss=supervised_weight * sup, supervised_loss=sup, labeled=logits[0], weak=logits[1],
                  strong=strong)
  if uda.weight > 0 and u_strong is not None:
    consistency, mask_ratio = losses.uda_consistency(out.weak, out.strong, uda.temperature, uda.threshold)
    weight = uda.weight * losses.linear_ramp(step, uda.ramp_steps)
    out = out._replace(loss=out.loss + tf.cast(weight, consistency.dtype) * consistency, uda_loss=consistency,
                       uda_mask_ratio=mask_ratio, uda_weight=weight)
  return out


class UDAModel(SemiSupervisedModel):
  """A single network trained with supervised CE + UDA consistency (the paper's UDA baseline).

  Elements must carry two views: ((x_l, y_l), (x_u_weak, x_u_strong)). Compile with `optimizer=`.
  Args: `uda` (`UDASettings`, the MPL teacher's very settings in a run), `label_smoothing`; `ema_decay`,
  `grad_clip_norm`, `seed` as in `SemiSupervisedModel`.
  """

  def __init__(self, network: keras.Model, uda: UDASettings = UDASettings(), label_smoothing: float = 0.0,
               **kwargs):
    super().__init__(student=network, **kwargs)
    self.options = dict(uda=uda, label_smoothing=label_smoothing)

  def train_step(self, data):
    x_l, y_l, u_weak, u_strong = unpack(data)
    if u_strong is None:
      raise ValueError("UDAModel needs two unlabeled views per element: ((x_l, y_l), (x_u_weak, x_u_strong))")
    variables = self.student.trainable_variables
    with tf.GradientTape() as tape:
      out = uda_objective(self.student, x_l, y_l, u_weak, u_strong, self.global_step, **self.options)
    self._apply(tape, out.loss, variables, self.optimizer)
    self._track("student/loss", out.loss)
    self._track("student/supervised_loss", out.supervised_loss)
    if out.uda_loss is not None:
      self._track("uda/loss", out.uda_loss)
      self._track("uda/mask_ratio", out.uda_mask_ratio)
    return self._finish_step()


def phases(builder) -> List[Phase]:
  """The UDA baseline: one network on the two-view training stream with the run's UDA settings, then finetuning."""
  model = builder.make(UDAModel, builder.network(2), uda=builder.uda())
  model.compile(optimizer=builder.optimizer("student", builder.steps))
  return [Phase("train", lambda _: model, "train", builder.steps, scores="all", main=True), *finetune(builder)]


def phases_with_distill(builder) -> List[Phase]:
  """UDA, then the distill phase MPL's recipe has (`distill.*`, `pseudo_labels.distill`): the UDA network, frozen,
  labels the unlabeled data for itself going on training (Noisy Student's step, with the student starting from
  its teacher as MPL's distilled student starts from MPL's), then finetuning. The control that tells what MPL's
  distill phase buys from what MPL's main phase buys (`mpl-compare`)."""
  distilled = builder.make(distill, builder)
  if not distilled:
    raise ValueError("run.method = 'uda_distill' needs a distill phase: bind distill.steps > 0 (gin/own_data.gin "
                     "has 2000), or use run.method = 'uda'")
  train, *finetuning = phases(builder)
  return [train, *distilled, *finetuning]


METHOD = Method("uda", phases, configurables=((UDAModel, None),))
METHOD_WITH_DISTILL = Method("uda_distill", phases_with_distill,
                             configurables=((UDAModel, None), (distill, "distill")))
