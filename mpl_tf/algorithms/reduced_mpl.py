"""Reduced Meta Pseudo Labels (Pham et al., CVPR 2021, Appendix E): MPL without two big networks in memory.

The paper's recipe, in three phases (`phases`; `run.method = 'reduced_mpl'`):
  1. a large teacher T is trained first, on its own (here: UDA or supervised, `reduced_mpl.big_teacher_method`);
  2. its predictions p = softmax(T(x)) on the student's training data are computed once, on the clean images
     (inference mode), and stored (`mpl_tf.data.stored_predictions`, `workdir/predictions/big_teacher.npz`);
     T is freed.
     The student is only built after that, so T and the student are never in memory together;
  3. a *reduced teacher* T_R, a small MLP that maps T's prediction on an image to a distribution over classes
     (`build_reduced_teacher`), is trained with MPL together with the student (`ReducedMetaPseudoLabelsModel`).
     It can only re-weigh what T said about an image, not look at the image, but it still receives the
     student's feedback, so it can adapt the labels to the student's learning state.

Phase 3 trains on `((x_l, y_l, p_l), (x_u, p_u))` elements: the images with T's stored probabilities p of each
(`mpl_tf.data.stored_predictions.stored_prediction_dataset`).

The MPL math is exactly that of `MetaPseudoLabelsModel`, whose step this class runs unchanged; it overrides only
how a batch is split and how the teacher's logits are made (`_split`, `_teacher_objective`). With hard labels
the teacher's gradient is (h - b) * grad CE(y_hat, T_R(p_u)) with h = old - new labeled loss of the student;
with soft labels it is the exact one-step meta-gradient through the student's update. Only the teacher's
input (p instead of x) and its auxiliary loss (supervised CE on p_l; no UDA, since T_R never sees two views)
differ. `tests/algorithms/test_reduced_mpl.py` checks both estimators against finite differences / exact enumeration.
"""
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from mpl_tf import layout, losses
from mpl_tf.algorithms.mpl import Batch, MetaPseudoLabelsModel, TeacherForward
from mpl_tf.algorithms.phases import Method, Phase
from mpl_tf.algorithms.supervised import SupervisedModel, finetune
from mpl_tf.algorithms.uda import UDAModel
from mpl_tf.keras import keras

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
class ReducedMetaPseudoLabelsModel(MetaPseudoLabelsModel):
  """MPL between a reduced teacher T_R (over stored big-teacher predictions) and a student over images.

  Example:
    model = ReducedMetaPseudoLabelsModel(teacher=build_reduced_teacher(10), student=build_model("cnn_small", ...))
    model.compile(teacher_optimizer=keras.optimizers.SGD(0.05), student_optimizer=keras.optimizers.SGD(0.05))
    model.fit(stored_prediction_dataset(...), steps_per_epoch=1000)

  Args: those of `MetaPseudoLabelsModel` except `uda` (T_R sees one stored prediction per image, never two
  views), `student_view` and `pseudo_label_view` (the element carries the student's one view). `teacher`
  maps [N, K] probabilities to [N, K] logits; `label_smoothing` and `teacher_supervised_weight` apply to
  T_R's supervised loss CE(y_l, T_R(p_l)).
  """

  def __init__(self, teacher: keras.Model, student: keras.Model, **kwargs):
    unsupported = sorted(set(kwargs) & {"uda", "student_view", "pseudo_label_view"})
    if unsupported:
      raise TypeError(f"ReducedMetaPseudoLabelsModel takes no {', '.join(unsupported)}: its teacher reads stored "
                      "predictions, one per image, and the student trains on the element's one view")
    super().__init__(teacher=teacher, student=student, **kwargs)
    if teacher.input_shape[-1] != teacher.output_shape[-1]:
      raise ValueError(f"the reduced teacher must map K probabilities to K logits; it maps "
                       f"{teacher.input_shape} to {teacher.output_shape}")

  @property
  def teacher_for_eval(self):
    return None  # T_R reads predictions, not images: `evaluate_reduced_teacher` scores it on stored ones

  def _split(self, data) -> Batch:
    try:
      (x_l, y_l, p_l), (x_u, p_u) = data
    except (TypeError, ValueError):
      raise ValueError("ReducedMetaPseudoLabelsModel trains on ((x_l, y_l, p_l), (x_u, p_u)) elements, p being "
                       "the big teacher's stored probabilities (mpl_tf.data.stored_predictions)") from None
    return Batch(x_l=x_l, y_l=y_l, u_student=x_u, teacher_inputs=(p_l, p_u))

  def _teacher_objective(self, batch: Batch) -> TeacherForward:
    p_l, p_u = batch.teacher_inputs
    p = tf.cast(tf.concat([p_l, p_u], axis=0), self.teacher.dtype)
    t_logits_l, t_logits_u = layout.split(self.teacher(p, training=True), [p_l, p_u], layout.mesh_of(self.teacher))
    options = self.teacher_options
    supervised = tf.reduce_mean(losses.cross_entropy(batch.y_l, t_logits_l, options["label_smoothing"]))
    # How far T_R has moved from the big teacher: the fraction of unlabeled images whose top class it keeps.
    agrees = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(t_logits_u, -1), tf.argmax(p_u, -1)), tf.float32))
    return TeacherForward(loss=tf.cast(options["supervised_weight"], supervised.dtype) * supervised,
                          logits_u=t_logits_u,
                          metrics={"teacher/supervised_loss": supervised, "reduced/agrees_with_big_teacher": agrees})


def evaluate_reduced_teacher(teacher: keras.Model, probabilities: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of T_R on stored big-teacher probabilities (e.g. of the test set) against their labels."""
  logits = teacher(tf.constant(probabilities, teacher.dtype), training=False)
  return float(np.mean(np.argmax(logits.numpy(), -1) == np.asarray(labels)))




# --- the method ------------------------------------------------------------------------------------------------
def phases(builder, big_teacher_method: str = "uda", student_wait_steps: int = 0) -> List[Phase]:
  """Reduced MPL's phases (gin `reduced_mpl.*`): 'teacher' (the big one), 'mpl' (T_R + student), finetuning.

  The big teacher (`big_teacher_method`: 'uda' on the two-view training data, or 'supervised' on the labeled
  data; network and optimizer under the gin scope `big_teacher`, e.g. `big_teacher/network.name`) trains for
  `run.teacher_pretrain_steps`, its probabilities on the clean labeled, unlabeled and test images are stored in
  `workdir/predictions/big_teacher.npz`, and it is freed; only then are the reduced teacher (optimizer scope
  `teacher/`) and the student (`student/`, waiting `student_wait_steps`) built. A resumed run with the
  predictions on disk skips the big teacher altogether.
  """
  if big_teacher_method not in ("uda", "supervised"):
    raise ValueError(f"reduced_mpl.big_teacher_method must be 'uda' or 'supervised', got {big_teacher_method!r}")
  if student_wait_steps < 0:
    raise ValueError(f"reduced_mpl.student_wait_steps must be >= 0, got {student_wait_steps}")
  store = builder.predictions()
  stored = {}

  def big_teacher(_):
    network = builder.network(1, scope="big_teacher")
    options = dict(uda=builder.uda()) if big_teacher_method == "uda" else {}
    model = builder.make(UDAModel if big_teacher_method == "uda" else SupervisedModel, network, **options)
    model.compile(optimizer=builder.optimizer("big_teacher", builder.teacher_steps))
    return model

  def reduced(_):
    stored["predictions"] = store.load()
    model = builder.make(ReducedMetaPseudoLabelsModel,
                         teacher=builder.make(build_reduced_teacher, builder.data.num_classes, seed=builder.seed * 10 + 3),
                         student=builder.network(2), seed=builder.seed)
    model.compile(teacher_optimizer=builder.optimizer("teacher", builder.steps),
                  student_optimizer=builder.optimizer("student", builder.steps, wait_steps=student_wait_steps))
    return model

  def teacher_scores(model):  # T_R scored on the big teacher's stored test predictions
    predictions = stored["predictions"]
    return {"teacher/accuracy": evaluate_reduced_teacher(model.teacher, predictions.test, predictions.test_labels),
            "big_teacher/accuracy": predictions.big_teacher_accuracy}

  return [Phase("teacher", big_teacher, "train" if big_teacher_method == "uda" else "labeled", builder.teacher_steps,
                skip=store.exists, after=lambda model: store.store(model.eval_student),
                hand_on=False),
          Phase("mpl", reduced, lambda: store.dataset(stored["predictions"]), builder.steps,
                scores="all", main=True, after=teacher_scores),
          *finetune(builder)]


# The MPL feedback options come from MetaPseudoLabelsModel's bindings unless Reduced MPL binds its own.
FEEDBACK_OPTIONS = ("pseudo_labels", "feedback", "feedback_batch_norm", "mpl_reduction", "baseline_decay",
                    "mpl_weight")
METHOD = Method("reduced_mpl", phases, supports_mesh=False,
                configurables=((ReducedMetaPseudoLabelsModel, None), (build_reduced_teacher, None),
                               (phases, "reduced_mpl")),
                inherits=((ReducedMetaPseudoLabelsModel, FEEDBACK_OPTIONS),))
