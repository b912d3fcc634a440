"""What a method is to the experiment: an ordered list of training phases, declared by the method's own module.

`mpl_tf.experiment.run` runs any method the same way: it asks the method (`Method.phases`) for its phases and
trains them in order (`mpl_tf.trainer.train_phase`, each checkpointed under its name, so a killed run resumes
in the phase it was in), scoring the model after the phases that ask for it. It never branches on the method's
name. A phase's model is made lazily, from the previous phase's model, so a phase can hand its student on
(distill, finetune) or build its networks only once an earlier phase's are freed (Reduced MPL).

The shared phases live with the model they train: `supervised.finetune` (every method's last phase) and
`pseudo_labels.distill` (MPL's optional catch-up phase). Methods get what they build from a `Builder` (made by the experiment, where gin lives):
  builder.seed, .steps, .finetune_steps, .teacher_steps, .workdir, .data (the `DatasetBundle`, read only)
  builder.network(offset, scope=None)      a fresh network of the run's family, seeded seed * 10 + offset
  builder.optimizer(scope, total_steps, wait_steps=0)    the gin-configured optimizer of a scope
  builder.make(cls_or_fn, *args, **kwargs) `cls_or_fn` with the run's gin bindings applied
  builder.uda()                            the run's `UDASettings` (gin `uda.*`, bound once for every method)
  builder.has_stored_predictions(), builder.store_predictions(network), builder.stored_predictions(),
  builder.stored_prediction_dataset(stored)          Reduced MPL's stored big-teacher predictions
So this package needs neither gin nor `mpl_tf.data`.
"""
import dataclasses
from typing import Callable, Dict, List, Optional, Union

from mpl_tf.keras import keras

# What a phase scores when it ends: nothing, the method model's every metric (student and teacher), or the
# student's only (a later phase changes the student, never the teacher's figures).
SCORES = ("none", "all", "student")


@dataclasses.dataclass
class Phase:
  """One training phase.

  Attributes:
    name: its checkpoint and summary folder (`workdir/checkpoints/<name>`), unique within the method.
    model: the previous phase's model (None for the first) -> this phase's compiled model.
    data: 'train' (the two-part semi-supervised stream), 'labeled', or a function that makes the dataset.
    steps: the model's `global_step` at which the phase ends.
    scores: one of `SCORES`.
    keep_student_as: before this phase, keep the student's accuracies under `<key><suffix>` (e.g.
      '_before_finetune'), so a results tool can compare the student's states.
    main: the phase whose model the run returns and whose step is the run's `step`.
    skip: when it returns True, the phase is left out (its result exists already).
    after: called with the trained model; may return extra metrics.
    hand_on: give the trained model to the next phase; False drops it first (and collects garbage), so that
      its networks are freed before the next phase builds its own (Reduced MPL's big teacher).
  """
  name: str
  model: Callable[[Optional[keras.Model]], keras.Model]
  data: Union[str, Callable[[], object]]
  steps: int
  scores: str = "none"
  keep_student_as: Optional[str] = None
  main: bool = False
  skip: Callable[[], bool] = lambda: False
  after: Optional[Callable[[keras.Model], Optional[Dict[str, float]]]] = None
  hand_on: bool = True

  def __post_init__(self):
    if self.scores not in SCORES:
      raise ValueError(f"Phase.scores must be one of {SCORES}, got {self.scores!r}")
    if self.data not in ("train", "labeled") and not callable(self.data):
      raise ValueError(f"Phase.data must be 'train', 'labeled' or a function, got {self.data!r}")


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's name, its phases (a function of the `Builder`) and whether its models run on a DTensor mesh."""
  name: str
  phases: Callable[..., List[Phase]]
  supports_mesh: bool = True
