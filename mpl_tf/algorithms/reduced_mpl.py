"""Reduced Meta Pseudo Labels (Pham et al., CVPR 2021, Appendix E): MPL without two big networks in memory.

The paper's recipe, in three phases (`mpl_tf.experiment.run` with `run.method = 'reduced_mpl'`):
  1. a large teacher T is trained first, on its own (here: UDA or supervised, `reduced_mpl.big_teacher_method`);
  2. its predictions p = softmax(T(x)) on the student's training data are computed once, on the clean images
     (inference mode), and stored (`StoredPredictions`, `workdir/predictions/big_teacher.npz`); T is freed.
     The student is only built after that, so T and the student are never in memory together;
  3. a *reduced teacher* T_R, a small MLP that maps T's prediction on an image to a distribution over classes
     (`build_reduced_teacher`), is trained with MPL together with the student (`ReducedMetaPseudoLabelsModel`).
     It can only re-weigh what T said about an image, not look at the image, but it still receives the
     student's feedback, so it can adapt the labels to the student's learning state.

Training element of phase 3 (`stored_prediction_dataset`):
  ((x_l, y_l, p_l), (x_u, p_u))
    x_l  [B, H, W, C]  labeled images, weak view, [0, 1]      the student's labeled loss before/after its step
    y_l  [B] int32     their labels                            T_R's supervised loss and the student's feedback
    p_l  [B, K]        T's stored probabilities on x_l         T_R's supervised loss CE(y_l, T_R(p_l))
    x_u  [U, H, W, C]  unlabeled images, strong view, [0, 1]   the student trains on them
    p_u  [U, K]        T's stored probabilities on x_u         pseudo labels y_hat ~ softmax(T_R(p_u))
The predictions are of the un-augmented image and travel with it through the shuffle, so each view of an
image is labeled from the one stored prediction of that image (the paper pre-computes "all target
distributions for the student's training data"; augmented views are not re-scored).

The MPL math is exactly that of `MetaPseudoLabelsModel` (this class reuses its student step): with hard labels
the teacher's gradient is (h - b) * grad CE(y_hat, T_R(p_u)) with h = old - new labeled loss of the student;
with soft labels it is the exact one-step meta-gradient through the student's update. Only the teacher's
input (p instead of x) and its auxiliary loss (supervised CE on p_l; no UDA, since T_R never sees two views)
differ. `tests/test_reduced_mpl.py` checks both estimators against finite differences / exact enumeration.
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from mpl_tf import losses
from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel
from mpl_tf.keras import keras
from mpl_tf.schedules import learning_rate_at

PROBABILITY_FLOOR = 1e-6  # log(p) of the residual path: stored float32 probabilities can be exactly 0


# --- the reduced teacher ---------------------------------------------------------------------------------------
def build_reduced_teacher(num_classes: int, hidden: Sequence[int] = (128,), activation: str = "relu",
                          residual: bool = True, zero_init: bool = True, init_scale: Optional[float] = None,
                          seed: Optional[int] = None, name: str = "reduced_teacher") -> keras.Model:
  """The reduced teacher T_R: an MLP from the big teacher's probabilities p [K] to logits [K].

  With `residual` the logits are log(max(p, 1e-6)) + MLP(p), and with `zero_init` the MLP's output layer starts
  at zero, so T_R starts as the big teacher itself (softmax(log p) = p) and learns a correction: the paper's
  observation that many of T_R's actions are close to the identity. (Our choice; the paper does not give T_R's
  architecture beyond "a multi-layered perceptron".)

  Args:
    num_classes: K, the size of the input distribution and of the logits.
    hidden: units of the hidden layers.
    activation: of the hidden layers.
    residual: add log p to the MLP's output.
    zero_init: output layer initialised to zero (else like the hidden layers).
    init_scale: None: Glorot-uniform kernels; else U(-init_scale, init_scale) kernels and biases (tests).
    seed: makes the initialisation reproducible.
  """
  if num_classes < 2:
    raise ValueError(f"build_reduced_teacher needs num_classes >= 2, got {num_classes}")

  def init(i, bias=False):
    layer_seed = None if seed is None else seed * 1000 + i + (500 if bias else 0)
    if init_scale is None:
      return keras.initializers.Zeros() if bias else keras.initializers.GlorotUniform(seed=layer_seed)
    return keras.initializers.RandomUniform(-init_scale, init_scale, seed=layer_seed)

  inputs = keras.Input(shape=(num_classes,), name="probabilities")
  x = inputs
  for i, units in enumerate(hidden):
    x = keras.layers.Dense(units, activation=activation, kernel_initializer=init(i),
                           bias_initializer=init(i, bias=True), name=f"dense_{i}")(x)
  last = len(hidden)
  out_init = (keras.initializers.Zeros(), keras.initializers.Zeros()) if zero_init else (init(last),
                                                                                         init(last, bias=True))
  logits = keras.layers.Dense(num_classes, kernel_initializer=out_init[0], bias_initializer=out_init[1],
                              name="correction")(x)
  if residual:
    log_p = keras.layers.Lambda(lambda p: tf.math.log(tf.maximum(p, PROBABILITY_FLOOR)), name="log_p")(inputs)
    logits = keras.layers.Add(name="logits")([log_p, logits])
  return keras.Model(inputs, logits, name=name)


# --- the MPL step with a reduced teacher -----------------------------------------------------------------------
def unpack_stored(data):
  """Splits `((x_l, y_l, p_l), (x_u, p_u))` into its five tensors, with a clear error for anything else."""
  try:
    (x_l, y_l, p_l), (x_u, p_u) = data
  except (TypeError, ValueError):
    raise ValueError("ReducedMetaPseudoLabelsModel trains on ((x_l, y_l, p_l), (x_u, p_u)) elements, p being the "
                     "big teacher's stored probabilities (see stored_prediction_dataset)") from None
  return x_l, y_l, p_l, x_u, p_u


class ReducedMetaPseudoLabelsModel(MetaPseudoLabelsModel):
  """MPL between a reduced teacher T_R (over stored big-teacher predictions) and a student over images.

  Example:
    model = ReducedMetaPseudoLabelsModel(teacher=build_reduced_teacher(10), student=build_model("cnn_small", ...))
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.05), student_optimizer=keras.optimizers.SGD(0.05))
    model.fit(stored_prediction_dataset(...), steps_per_epoch=1000)

  Args: those of `MetaPseudoLabelsModel` without the UDA options (T_R sees one stored prediction per image,
  never two views) and without `student_view` (the element carries the student's one view). `teacher` maps
  [N, K] probabilities to [N, K] logits; `label_smoothing` and `teacher_supervised_weight` apply to T_R's
  supervised loss CE(y_l, T_R(p_l)).
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, pseudo_labels: str = "sample",
               feedback: str = "label_effect", feedback_batch_norm: str = "train", mpl_reduction: str = "mean",
               baseline_decay: float = 0.99, mpl_weight: float = 1.0, teacher_supervised_weight: float = 1.0,
               label_smoothing: float = 0.0, student_label_smoothing: float = 0.0, student_wait_steps: int = 0,
               ema_decay: float = 0.0, grad_clip_norm: float = 0.0, seed: int = 0, **kwargs):
    super().__init__(teacher=teacher, student=student, pseudo_labels=pseudo_labels, feedback=feedback,
                     feedback_batch_norm=feedback_batch_norm, mpl_reduction=mpl_reduction,
                     baseline_decay=baseline_decay, mpl_weight=mpl_weight,
                     teacher_supervised_weight=teacher_supervised_weight, label_smoothing=label_smoothing,
                     student_label_smoothing=student_label_smoothing, student_wait_steps=student_wait_steps,
                     ema_decay=ema_decay, grad_clip_norm=grad_clip_norm, seed=seed, **kwargs)
    if teacher.input_shape[-1] != teacher.output_shape[-1]:
      raise ValueError(f"the reduced teacher must map K probabilities to K logits; it maps "
                       f"{teacher.input_shape} to {teacher.output_shape}")

  @property
  def teacher_for_eval(self):
    return None  # T_R reads predictions, not images: `evaluate_reduced_teacher` scores it on stored ones

  def train_step(self, data):
    x_l, y_l, p_l, x_u, p_u = unpack_stored(data)
    student_lr = learning_rate_at(self.student_optimizer)
    t_vars = self.teacher.trainable_variables
    with tf.GradientTape(watch_accessed_variables=False) as t_tape:
      t_tape.watch(t_vars)
      p = tf.cast(tf.concat([p_l, p_u], axis=0), self.teacher.dtype)
      t_logits_l, t_logits_u = tf.split(self.teacher(p, training=True), [tf.shape(p_l)[0], tf.shape(p_u)[0]])
      supervised = tf.reduce_mean(losses.cross_entropy(y_l, t_logits_l, self.teacher_options["label_smoothing"]))
      t_logits_u = tf.debugging.check_numerics(t_logits_u, "reduced teacher logits on the unlabeled batch")
      s, mpl = self._feedback(x_l, y_l, x_u, t_logits_u, student_lr)
      sup_weight = self.teacher_options["supervised_weight"]
      t_loss = tf.cast(sup_weight, mpl.dtype) * supervised + tf.cast(self.mpl_weight, mpl.dtype) * mpl
    self._update_teacher(t_tape, t_loss, t_vars, s, mpl, student_lr)
    self._track("teacher/supervised_loss", supervised)
    # How far T_R has moved from the big teacher: the fraction of unlabeled images whose top class it keeps.
    self._track("reduced/agrees_with_big_teacher", tf.reduce_mean(tf.cast(
        tf.equal(tf.argmax(t_logits_u, -1), tf.argmax(p_u, -1)), tf.float32)))
    return self._finish_step()


def evaluate_reduced_teacher(teacher: keras.Model, probabilities: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of T_R on stored big-teacher probabilities (e.g. of the test set) against their labels."""
  logits = teacher(tf.constant(probabilities, teacher.dtype), training=False)
  return float(np.mean(np.argmax(logits.numpy(), -1) == np.asarray(labels)))


# --- stored predictions ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class StoredPredictions:
  """The big teacher's probabilities, computed once (phase 2) and all that is kept of it.

  Attributes:
    labeled, unlabeled: [N, K] float32 probabilities on the labeled / unlabeled training images, in the order
      of `labeled_indices` / `unlabeled_indices` (indices into the source, see `DatasetInputs`).
    test: [N_test, K] probabilities on the test set, in its order, and `test_labels` [N_test]: to score T_R.
    split_digest: the split they were computed on (checked when loaded into a run).
  """
  labeled: np.ndarray
  unlabeled: np.ndarray
  test: np.ndarray
  test_labels: np.ndarray
  labeled_indices: np.ndarray
  unlabeled_indices: np.ndarray
  split_digest: str

  @property
  def big_teacher_accuracy(self) -> float:
    return float(np.mean(np.argmax(self.test, -1) == self.test_labels))

  def save(self, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})
    os.replace(tmp, path)  # a kill mid-write leaves no half file that a resume would trust

  @classmethod
  def load(cls, path: str, split_digest: Optional[str] = None) -> "StoredPredictions":
    with np.load(path, allow_pickle=False) as f:
      stored = cls(**{field.name: f[field.name] for field in dataclasses.fields(cls)})
    stored.split_digest = str(stored.split_digest)
    if split_digest is not None and stored.split_digest != split_digest:
      raise ValueError(f"{path} holds predictions for split {stored.split_digest}, this run uses {split_digest}: "
                       "use another workdir")
    return stored


@dataclasses.dataclass(frozen=True)
class DatasetInputs:
  """What stored predictions need from a dataset beyond its `DatasetBundle`: the raw examples and their views.

  Attributes:
    labeled: finite `(image, label)` dataset of the labeled examples, in the order of `labeled_indices`.
    unlabeled: finite `(image, label)` dataset of the unlabeled examples (labels unused; -1 for extra ones), in
      the order of `unlabeled_indices`.
    labeled_indices, unlabeled_indices: source indices (unlabeled: the split's, then the extra examples').
    views: the dataset's weak / strong / finish functions; prepare: its per-example preparation.
    split_digest: fingerprint of the split, equal to the bundle's.
  """
  labeled: tf.data.Dataset
  unlabeled: tf.data.Dataset
  labeled_indices: np.ndarray
  unlabeled_indices: np.ndarray
  views: object
  prepare: object
  split_digest: str


def dataset_inputs(bundle) -> DatasetInputs:
  """The raw labeled and unlabeled examples behind `bundle`'s training streams, each once, with the views and
  preparation those streams use (`bundle.raw`, made by `build_dataset`): what the big teacher's predictions
  are computed on and zipped with. `DatasetBundle` itself hands out augmented, shuffled streams only.
  """
  raw = bundle.raw
  if raw is None:
    raise ValueError(f"reduced_mpl needs an image dataset with random access to its examples, not {bundle.name!r}")
  from mpl_tf.data import sources  # pylint: disable=import-outside-toplevel
  source, split = raw.source, raw.split
  labeled_indices = np.asarray(split.labeled, np.int64)
  unlabeled_indices = np.asarray(split.unlabeled, np.int64)
  if source.num_extra_unlabeled:
    if not isinstance(source, sources.ArraySource):
      raise ValueError(f"{bundle.name}: stored predictions for extra unlabeled data are only supported for "
                       "in-memory sources")
    first = len(source.pool_labels)
    unlabeled_indices = np.concatenate([unlabeled_indices, np.arange(first, first + source.num_extra_unlabeled)])
  return DatasetInputs(
      labeled=source.examples(labeled_indices), unlabeled=source.examples(unlabeled_indices),
      labeled_indices=labeled_indices, unlabeled_indices=unlabeled_indices, views=raw.views, prepare=raw.prepare,
      split_digest=bundle.split_digest)


def predict_probabilities(network: keras.Model, batches) -> np.ndarray:
  """softmax(network(x)) in inference mode over an iterable of [N, ...] image batches in [0, 1], concatenated."""
  predict = tf.function(lambda x: tf.nn.softmax(tf.cast(network(x, training=False), tf.float32), axis=-1),
                        reduce_retracing=True)
  parts = [predict(x).numpy() for x in batches]
  return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, network.output_shape[-1]), np.float32)


def store_predictions(network: keras.Model, inputs: DatasetInputs, test: tf.data.Dataset,
                      batch_size: int = 256) -> StoredPredictions:
  """Phase 2: the big teacher's probabilities on the clean labeled, unlabeled and test images, once each.

  Training images get the evaluation treatment (`finish`, no augmentation); `test` is the bundle's
  finite `(x, y)` test batches, already finished.
  """
  def clean(examples):
    return examples.map(lambda x, y: inputs.views.finish(inputs.prepare(x))).batch(batch_size)

  test_x, test_y = [], []
  for x, y in test:
    test_x.append(x)
    test_y.append(y.numpy())
  return StoredPredictions(
      labeled=predict_probabilities(network, clean(inputs.labeled)),
      unlabeled=predict_probabilities(network, clean(inputs.unlabeled)),
      test=predict_probabilities(network, test_x), test_labels=np.concatenate(test_y).astype(np.int32),
      labeled_indices=inputs.labeled_indices, unlabeled_indices=inputs.unlabeled_indices,
      split_digest=inputs.split_digest)


def stored_prediction_dataset(inputs: DatasetInputs, stored: StoredPredictions, *, batch_size: int,
                              unlabeled_batch_size: int, seed: int, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
  """Phase 3's infinite training dataset of `((x_l, y_l, p_l), (x_u, p_u))` elements (see the module docstring).

  Each raw example is zipped with its stored prediction *before* the shuffle, so the pair stays together;
  then it is prepared, batched and given its view (labeled: weak, unlabeled: strong, as MPL's student sees
  them), with the same view functions as the dataset's own `train` stream.
  """
  from mpl_tf.data import splits  # pylint: disable=import-outside-toplevel
  if not (np.array_equal(stored.labeled_indices, inputs.labeled_indices)
          and np.array_equal(stored.unlabeled_indices, inputs.unlabeled_indices)):
    raise ValueError("the stored predictions were computed on other examples than these inputs")
  views, prepare, auto = inputs.views, inputs.prepare, tf.data.AUTOTUNE

  def stream(examples, probabilities, name):
    n = len(probabilities)
    ds = tf.data.Dataset.zip((examples, tf.data.Dataset.from_tensor_slices(probabilities)))
    ds = ds.shuffle(min(n, shuffle_buffer), seed=splits.derived_seed(seed, name), reshuffle_each_iteration=True)
    return ds.repeat()

  lab = stream(inputs.labeled, stored.labeled, "labeled")
  lab = lab.map(lambda xy, p: (prepare(xy[0]), tf.cast(xy[1], tf.int32), p), num_parallel_calls=auto)
  lab = lab.batch(batch_size, drop_remainder=True)
  lab = lab.map(lambda x, y, p: (views.finish(views.weak(x)), y, p), num_parallel_calls=auto)
  unl = stream(inputs.unlabeled, stored.unlabeled, "unlabeled")
  unl = unl.map(lambda xy, p: (prepare(xy[0]), p), num_parallel_calls=auto)
  unl = unl.batch(unlabeled_batch_size, drop_remainder=True)
  unl = unl.map(lambda x, p: (views.finish(views.strong(views.weak(x))), p), num_parallel_calls=auto)
  return tf.data.Dataset.zip((lab, unl)).prefetch(auto)
