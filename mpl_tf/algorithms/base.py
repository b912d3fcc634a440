"""What every method shares: the data contract, the EMA student, evaluation and namespaced metrics.

Each method (MPL, UDA, Pseudo Labels, supervised) is a `keras.Model` subclass with its own `train_step`
and the `SemiSupervisedModel` below underneath it, so all of them train with `fit` on the same elements:

  ((x_l, y_l), x_u)                          one unlabeled view
  ((x_l, y_l), (x_u_weak, x_u_strong))       two views of the same unlabeled images (UDA)
  (x_l, y_l)                                 labeled only (supervised training, finetuning)

and evaluate with `evaluate` on (x, y) batches, reporting `student/accuracy` (the EMA student when there is
one, as in the official code) and `teacher/accuracy` when the method has a teacher.
"""
from typing import Dict, Optional, Tuple

import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.evaluation import TOP_K  # top-5 accuracy is reported beyond 5 classes
from mpl_tf.keras import keras


PSEUDO_LABEL_MODES = ("sample", "argmax", "soft")  # drawn from softmax(T), its argmax, or the distribution
VIEWS = ("strong", "weak")


def check_choice(name: str, value, known) -> None:
  """A clear error for a string option outside its choices (`pseudo_labels`, `student_view`, ...)."""
  if value not in known:
    raise ValueError(f"{name} must be one of {known}, got {value!r}")


def views_of(u_weak: tf.Tensor, u_strong: Optional[tf.Tensor]) -> Dict[str, tf.Tensor]:
  """{'weak', 'strong'} -> the unlabeled batch in that view; with one view it serves as both."""
  return {"weak": u_weak, "strong": u_weak if u_strong is None else u_strong}


def unpack(data) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor], Optional[tf.Tensor]]:
  """Splits a training element into (x_l, y_l, x_u_weak, x_u_strong); missing parts are None."""
  if not isinstance(data, (tuple, list)) or len(data) != 2:
    raise ValueError("training elements must be (x_l, y_l), ((x_l, y_l), x_u) or "
                     f"((x_l, y_l), (x_u_weak, x_u_strong)); got {type(data).__name__} of {data!r}")
  first, second = data
  if not isinstance(first, (tuple, list)):
    return first, second, None, None
  x_l, y_l = first
  if isinstance(second, (tuple, list)):
    if len(second) != 2:
      raise ValueError(f"the unlabeled part must be x_u or (x_u_weak, x_u_strong), got {len(second)} parts")
    return x_l, y_l, second[0], second[1]
  return x_l, y_l, second, None


class _MetricStore:
  """Name -> metric, created on first use so each method reports only what it computes."""

  def __init__(self):
    self.trackers: Dict[str, keras.metrics.Metric] = {}


class SemiSupervisedModel(keras.Model):
  """Base for all methods: holds the student (and its EMA twin), evaluates, and keeps metric trackers.

  Args:
    student: the network that is returned and exported; a functional Keras model producing logits.
    ema_decay: decay of the student's exponential moving average (0 turns it off). With warm-up
      min(decay, (t+1)/(t+10)) as in the official code. When on, evaluation and `call` use the EMA student.
    grad_clip_norm: global-norm clipping of every gradient the method applies (`_apply`), 0 = off (official
      ImageNet recipe: 5).
    seed: seed of the method's random draws (pseudo labels); each step uses the stateless seed (seed, step).
  """

  def __init__(self, student: keras.Model, ema_decay: float = 0.0, grad_clip_norm: float = 0.0, seed: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if grad_clip_norm < 0:
      raise ValueError(f"grad_clip_norm must be >= 0, got {grad_clip_norm}")
    self.student = student
    self.ema_decay, self.grad_clip_norm, self.seed = ema_decay, grad_clip_norm, seed
    # The DTensor mesh the networks live on (mpl_tf.layout.place_network), None on a single device; the
    # method's own variables, counters and metrics are placed on it too.
    self.mesh = layout.mesh_of(student)
    layout.place_model(self, self.mesh)
    self.ema_student = None
    if ema_decay > 0:
      self.ema_student = layout.clone_network(student)  # clone_model + set_weights off a mesh
      self.ema_student._name = f"ema_{student.name}"  # pylint: disable=protected-access
      self.ema_student.trainable = False
    self.global_step = layout.variable(0, self.mesh, dtype=tf.int64, trainable=False, name="global_step")
    # A plain holder, not a dict attribute: Keras would track a dict and put the metrics in checkpoints.
    self._metric_store = _MetricStore()

  # --- evaluation --------------------------------------------------------------------------------
  @property
  def eval_student(self) -> keras.Model:
    """The student that is evaluated and exported: the EMA copy when EMA is on."""
    return self.ema_student if self.ema_student is not None else self.student

  @property
  def teacher_for_eval(self) -> Optional[keras.Model]:
    """The teacher to report `teacher/...` metrics for; None for methods without one."""
    return None

  def call(self, inputs, training=False):
    return self.eval_student(inputs, training=training)

  def evaluate(self, *args, **kwargs):  # pylint: disable=arguments-differ
    if self.mesh is not None:
      # A partial last batch cannot be split over a mesh: score single-device copies of the evaluated student
      # (and teacher), with the same weights, on every example.
      teacher = self.teacher_for_eval
      evaluator = _Evaluator(layout.single_device_copy(self.eval_student),
                             None if teacher is None else layout.single_device_copy(teacher))
      evaluator.compile()
      return evaluator.evaluate(*args, **kwargs)
    return super().evaluate(*args, **kwargs)

  def test_step(self, data):
    x, y = data[0], data[1]
    names = self._score("student", y, self.eval_student(x, training=False))
    teacher = self.teacher_for_eval
    if teacher is not None:
      names += self._score("teacher", y, teacher(x, training=False))
    return self._results(names)

  def _score(self, who: str, labels: tf.Tensor, logits: tf.Tensor):
    """Tracks `<who>/loss`, `<who>/accuracy` and, beyond 5 classes, `<who>/top5_accuracy`; returns the names."""
    names = [f"{who}/loss", f"{who}/accuracy"]
    self._track(names[0], tf.reduce_mean(losses.cross_entropy(labels, logits)))
    self._track_accuracy(names[1], labels, logits)
    if logits.shape[-1] is not None and logits.shape[-1] > TOP_K:
      names.append(f"{who}/top{TOP_K}_accuracy")
      self._track_accuracy(names[2], labels, logits, k=TOP_K)
    return names

  # --- metrics -----------------------------------------------------------------------------------
  @property
  def _trackers(self) -> Dict[str, keras.metrics.Metric]:
    return self._metric_store.trackers

  @property
  def metrics(self):
    return list(self._trackers.values())

  def _track(self, name: str, value: tf.Tensor) -> None:
    """Averages `value` under `name` (e.g. `mpl/h`) until Keras resets the metrics at the epoch's end."""
    if name not in self._trackers:
      with tf.init_scope():
        self._trackers[name] = keras.metrics.Mean(name=name, **layout.metric_kwargs(self.mesh))
    self._trackers[name].update_state(tf.cast(value, tf.float32))

  def _track_accuracy(self, name: str, labels: tf.Tensor, logits: tf.Tensor, k: int = 1) -> None:
    """Top-1 (k = 1) or top-k accuracy under `name`."""
    if name not in self._trackers:
      kwargs = dict(name=name, **layout.metric_kwargs(self.mesh))
      with tf.init_scope():
        self._trackers[name] = (keras.metrics.SparseCategoricalAccuracy(**kwargs) if k == 1 else
                                keras.metrics.SparseTopKCategoricalAccuracy(k=k, **kwargs))
    self._trackers[name].update_state(labels, logits)

  def _results(self, names=None) -> Dict[str, tf.Tensor]:
    """Current values of the named trackers (all of them when `names` is None)."""
    names = self._trackers if names is None else names
    return {name: self._trackers[name].result() for name in names}

  # --- shared training pieces --------------------------------------------------------------------
  def _update_ema(self) -> None:
    """ema <- d * ema + (1 - d) * student for every weight, moving statistics of batch norm included."""
    if self.ema_student is None:
      return
    decay = losses.ema_decay(self.ema_decay, self.global_step)
    for ema_var, var in zip(self.ema_student.weights, self.student.weights):
      d = tf.cast(decay, var.dtype)
      ema_var.assign(d * ema_var + (1.0 - d) * var)

  def _sampling_seed(self) -> tf.Tensor:
    """The stateless seed of this step's pseudo-label draws: (seed, global_step).

    int32: XLA compiles StatelessMultinomial for int32 seeds only (off XLA the draws equal the int64 seed's).
    """
    return tf.cast(tf.stack([tf.constant(self.seed, tf.int64), self.global_step]), tf.int32)

  @staticmethod
  def _gradients(tape: tf.GradientTape, loss: tf.Tensor, variables, optimizer):
    """tape.gradient, with loss scaling when `optimizer` is a (mixed_float16) LossScaleOptimizer."""
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
      # Scaling the output gradient is scaling the loss, without having to do it inside the tape.
      scale = tf.cast(optimizer.loss_scale, loss.dtype)
      return optimizer.get_unscaled_gradients(tape.gradient(loss, variables, output_gradients=scale))
    return tape.gradient(loss, variables)

  def _apply(self, tape: tf.GradientTape, loss: tf.Tensor, variables, optimizer):
    """gradient -> clip (`grad_clip_norm`) -> apply, the one update path of every method.

    Returns the clipped gradients *before* `stop_gradient`: inside an outer tape (MPL's soft labels) the
    caller can differentiate through them, while the optimizer only ever sees constants.
    """
    return self._apply_gradients(self._gradients(tape, loss, variables, optimizer), variables, optimizer)

  def _apply_gradients(self, grads, variables, optimizer):
    """clip (`grad_clip_norm`) -> apply, for gradients already taken; returns the clipped ones (see `_apply`)."""
    if self.grad_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, self.grad_clip_norm)
    optimizer.apply_gradients(zip([None if g is None else tf.stop_gradient(g) for g in grads], variables))
    return grads

  def _finish_step(self) -> Dict[str, tf.Tensor]:
    self._update_ema()
    self.global_step.assign_add(1)
    return self._results()


class _Evaluator(SemiSupervisedModel):
  """Scores given single-device copies of a mesh model's evaluated student and teacher (`evaluate`)."""

  def __init__(self, student: keras.Model, teacher: Optional[keras.Model]):
    super().__init__(student)
    self._teacher = teacher

  @property
  def teacher_for_eval(self):
    return self._teacher
