"""What a method is to the experiment: an ordered list of training phases, declared by the method's own module.

`mpl_tf.experiment.run` runs any method the same way: it asks the method (`Method.phases`) for its phases and
trains them in order (`mpl_tf.trainer.train_phase`, each checkpointed under its name, so a killed run resumes
in the phase it was in), scoring the model after the phases that ask for it. It never branches on the method's
name. A phase's model is made lazily, from the previous phase's model, so a phase can hand its student on
(distill, finetune) or build its networks only once an earlier phase's are freed (Reduced MPL).

The shared phases live with the model they train: `supervised.finetune` (every method's last phase) and
`pseudo_labels.distill` (MPL's optional catch-up phase). Methods get what they build from a `Builder` (the
experiment's, where gin lives), so this package needs neither gin nor `mpl_tf.data`. A method is one module of
this package with a module-level `Method`; `mpl_tf.experiment` finds it there and registers its `configurables`
with gin, so adding a method is its module and a gin file.
"""
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

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


class PredictionStore(Protocol):
  """Reduced MPL's big-teacher predictions of a run (`mpl_tf.data.stored_predictions.PredictionStore`)."""

  def exists(self) -> bool: ...
  def store(self, network: keras.Model) -> None: ...
  def load(self) -> Any: ...
  def dataset(self, stored) -> Any: ...


class Builder(Protocol):
  """What a method's phases may ask of the run, with the run's configuration (gin) applied."""
  seed: int
  steps: int
  finetune_steps: int
  teacher_steps: int
  workdir: str
  data: Any  # the run's `mpl_tf.data.DatasetBundle`, read only

  def network(self, offset: int, scope: Optional[str] = None) -> keras.Model:
    """A fresh network of the run's family, seeded seed * 10 + offset (gin scope `scope`, e.g. 'big_teacher')."""

  def optimizer(self, scope: str, total_steps: int, wait_steps: int = 0) -> keras.optimizers.Optimizer:
    """The configured optimizer of a scope ('teacher', 'student', 'finetune', ...)."""

  def make(self, obj: Callable, *args, **kwargs) -> Any:
    """`obj` (a method class or phase function) called with the run's bindings of it applied."""

  def uda(self) -> Any:
    """The run's `UDASettings` (gin `uda.*`, bound once for every method)."""

  def predictions(self) -> PredictionStore:
    """Where Reduced MPL's big teacher's predictions are stored for this run."""


@dataclasses.dataclass(frozen=True)
class Method:
  """A method: its name, its phases (a function of the `Builder`), whether its models run on a DTensor mesh,
  and what gin may configure: (object, gin name or None for the object's own) pairs. A class listed under
  `inherits` takes the listed arguments from its base class's bindings where it has none of its own."""
  name: str
  phases: Callable[..., List[Phase]]
  supports_mesh: bool = True
  configurables: Sequence[Tuple[Callable, Optional[str]]] = ()
  inherits: Sequence[Tuple[type, Sequence[str]]] = ()
