"""Reduced MPL (Appendix E): the reduced teacher's update is the same exact derivative as the full teacher's, its
data keeps each image with its stored prediction, and the big teacher is gone before the student exists.

The gradient checks mirror `test_mpl_gradients.py` (float64, tiny networks, teacher SGD at learning rate 1 so the
teacher's weight change is minus its gradient), with the teacher's input replaced by the big teacher's stored
probabilities p: the references differentiate L_l(theta_S - eta grad_S L_u(T_R(p_u; theta_R), theta_S)).
"""
import gc
import itertools
import os
import weakref

import gin
import numpy as np
import tensorflow as tf

from mpl_tf import losses
from mpl_tf.algorithms.reduced_mpl import ReducedMetaPseudoLabelsModel, build_reduced_teacher
from mpl_tf.data.stored_predictions import DatasetInputs, StoredPredictions, stored_prediction_dataset
from mpl_tf.keras import keras
from tests.conftest import checkpoint_options, resumes_at_the_same_element, tiny_batch, tiny_mlp
from tests.algorithms.test_mpl_gradients import ETA, finite_difference_gradient, flat, one_step_labeled_loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_reduced_teacher(seed=1, classes=3):
  return build_reduced_teacher(classes, hidden=(4,), activation="tanh", zero_init=False, init_scale=0.8, seed=seed)


def distributions(seed, n, classes=3):
  logits = np.random.default_rng(seed).normal(size=(n, classes)) * 2.0
  return tf.constant(tf.nn.softmax(logits).numpy(), keras.backend.floatx())


def reduced_model(student_lr=ETA, **options):
  options.setdefault("teacher_supervised_weight", 0.0)
  options.setdefault("baseline_decay", 0.0)
  model = ReducedMetaPseudoLabelsModel(teacher=tiny_reduced_teacher(), student=tiny_mlp(2, name="student"),
                                       **options)
  model.compile(teacher_optimizer=keras.optimizers.SGD(1.0), student_optimizer=keras.optimizers.SGD(student_lr))
  return model


def reduced_batch(n_u=3, seed=0):
  x_l, y_l, x_u = tiny_batch(seed=seed, n_u=n_u)
  p_l, p_u = distributions(seed + 10, x_l.shape[0]), distributions(seed + 20, n_u)
  return ((x_l, y_l, p_l), (x_u, p_u))


def teacher_gradient_of_step(model, data):
  before = flat(model.teacher.trainable_variables)
  metrics = model.train_step(data)
  return before - flat(model.teacher.trainable_variables), metrics


def as_image_teacher(teacher, p_u):
  """The reduced teacher seen as a function of x_u (which it ignores): the reference helper's interface."""
  return lambda _, training=False: teacher(p_u, training=training)


def test_reduced_soft_meta_gradient_matches_finite_differences(float64):
  data = reduced_batch()
  (x_l, y_l, _), (x_u, p_u) = data
  grad, _ = teacher_gradient_of_step(reduced_model(pseudo_labels="soft"), data)

  reference_teacher, reference_student = tiny_reduced_teacher(), tiny_mlp(2)
  numeric = finite_difference_gradient(
      reference_teacher.trainable_variables,
      lambda: one_step_labeled_loss(as_image_teacher(reference_teacher, p_u), reference_student, x_l, y_l, x_u,
                                    tf.nn.softmax))
  assert np.linalg.norm(numeric) > 1e-3, "the check is vacuous if the meta-gradient is ~0"
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_reduced_hard_label_estimator_is_unbiased_for_the_expected_one_step_loss(float64, monkeypatch):
  """Enumerating every labeling of 2 unlabeled examples: E[(h) grad CE(y_hat, T_R(p_u))] * |x_u| is exact."""
  data = reduced_batch(n_u=2)
  (x_l, y_l, _), (x_u, p_u) = data
  teacher = tiny_reduced_teacher()
  t_vars = teacher.trainable_variables
  estimate, exact = 0.0, 0.0
  for labels in itertools.product(range(3), repeat=2):
    fixed = tf.constant(labels, tf.int32)
    monkeypatch.setattr(losses, "pseudo_labels", lambda logits, mode, seed, fixed=fixed: fixed)
    grad, metrics = teacher_gradient_of_step(reduced_model(), data)
    assert float(metrics["mpl/h"]) != 0.0
    with tf.GradientTape() as tape:
      p = tf.exp(-tf.reduce_sum(losses.cross_entropy(fixed, teacher(p_u, training=True))))
    loss_after = one_step_labeled_loss(as_image_teacher(teacher, p_u), tiny_mlp(2), x_l, y_l, x_u,
                                       lambda _, y=fixed: tf.one_hot(y, 3, dtype=tf.float64))
    estimate = estimate + p.numpy() * grad
    exact = exact + loss_after * flat(tape.gradient(p, t_vars))
  assert np.linalg.norm(exact) > 1e-4
  np.testing.assert_allclose(estimate * 2, exact, rtol=1e-6, atol=1e-10)


def test_reduced_teacher_starts_as_the_big_teacher_and_learns_its_supervised_loss():
  p = distributions(0, 8, classes=10)
  teacher = build_reduced_teacher(10, seed=0)
  np.testing.assert_allclose(tf.nn.softmax(teacher(p)).numpy(), p.numpy(), rtol=1e-4, atol=1e-6)

  # Supervised term alone (mpl_weight 0): T_R moves its prediction on p_l towards y_l.
  x_l, _, x_u = tiny_batch(n_l=8, n_u=4)
  y_l = tf.constant(np.arange(8) % 10, tf.int32)
  p_u = distributions(1, 4, classes=10)
  model = ReducedMetaPseudoLabelsModel(teacher=teacher, student=tiny_mlp(2, classes=10), mpl_weight=0.0)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.5), student_optimizer=keras.optimizers.SGD(0.1))
  before = float(tf.reduce_mean(losses.cross_entropy(y_l, teacher(p))))
  for _ in range(20):
    metrics = model.train_step(((x_l, y_l, p), (x_u, p_u)))
  assert float(tf.reduce_mean(losses.cross_entropy(y_l, teacher(p)))) < before - 0.5
  assert 0.0 <= float(metrics["reduced/agrees_with_big_teacher"]) <= 1.0


def _index_coded(n_l, n_u, k, image_shape=(3,)):
  """DatasetInputs and StoredPredictions whose images and predictions both encode the example's index (labeled
  0..n_l-1, unlabeled 100..): p[:, 0] = index / 1000."""
  from mpl_tf.data import augment  # pylint: disable=import-outside-toplevel
  lab_x = np.broadcast_to(np.arange(n_l, dtype=np.float32).reshape((-1,) + (1,) * len(image_shape)),
                          (n_l,) + image_shape).copy()
  unl_x = np.broadcast_to(np.arange(100, 100 + n_u, dtype=np.float32).reshape((-1,) + (1,) * len(image_shape)),
                          (n_u,) + image_shape).copy()

  def prediction(values):
    p = np.full((len(values), k), 0.0, np.float32)
    p[:, 0] = values / 1000.0
    p[:, 1] = 1.0 - p[:, 0]
    return p

  first = (slice(None),) + (0,) * len(image_shape)
  inputs = DatasetInputs(
      labeled=tf.data.Dataset.from_tensor_slices((lab_x, np.arange(n_l) % k)),
      unlabeled=tf.data.Dataset.from_tensor_slices((unl_x, -np.ones(n_u, np.int64))),
      labeled_indices=np.arange(n_l), unlabeled_indices=np.arange(n_l, n_l + n_u),
      views=augment.gaussian_noise_views(0.0), prepare=lambda x, seed=None: tf.cast(x, tf.float32), split_digest="d")
  stored = StoredPredictions(labeled=prediction(lab_x[first]), unlabeled=prediction(unl_x[first]),
                             test=np.zeros((0, k), np.float32), test_labels=np.zeros(0, np.int32),
                             labeled_indices=inputs.labeled_indices, unlabeled_indices=inputs.unlabeled_indices,
                             split_digest="d")
  return inputs, stored


def test_stored_prediction_dataset_keeps_each_image_with_its_prediction():
  """Images encode their index, predictions encode it too: after shuffling and batching they still match."""
  n_l, n_u, k = 10, 23, 4
  inputs, stored = _index_coded(n_l, n_u, k)
  dataset = stored_prediction_dataset(inputs, stored, batch_size=4, unlabeled_batch_size=8, seed=0)
  seen = set()
  for (x_l, y_l, p_l), (x_u, p_u) in dataset.take(12):
    np.testing.assert_allclose(p_l.numpy()[:, 0] * 1000.0, x_l.numpy()[:, 0], atol=1e-3)
    np.testing.assert_array_equal(y_l.numpy(), x_l.numpy()[:, 0].astype(int) % k)
    np.testing.assert_allclose(p_u.numpy()[:, 0] * 1000.0, x_u.numpy()[:, 0], atol=1e-3)
    seen.update(x_u.numpy()[:, 0].astype(int).tolist())
  assert seen == set(range(100, 100 + n_u)), "every unlabeled image comes round"


def test_stored_prediction_stream_checkpoints_a_position_not_a_buffer_and_is_the_same_for_every_iterator():
  """The trainer checkpoints its iterator symbolically: the stream must resume at the same batch from a
  checkpoint that holds no images (`shuffle()` saved its whole buffer: 768 B an image here), every epoch of a set
  within the window must be a fresh permutation, and two iterators (a mesh's readers) must agree."""
  n_l, n_u = 40, 200
  inputs, stored = _index_coded(n_l, n_u, 4, image_shape=(8, 8, 3))
  dataset = stored_prediction_dataset(inputs, stored, batch_size=8, unlabeled_batch_size=20, seed=3).with_options(
      checkpoint_options())

  def ids(element):
    (x_l, _, _), (x_u, _) = element
    return x_l.numpy()[:, 0, 0, 0].astype(int).tolist(), x_u.numpy()[:, 0, 0, 0].astype(int).tolist()

  it = iter(dataset)
  seen = [ids(next(it)) for _ in range(13)]  # 2.6 epochs of the labeled set, 1.3 of the unlabeled
  labeled = [i for batch, _ in seen for i in batch]
  epochs = [labeled[e * n_l:(e + 1) * n_l] for e in range(2)]
  assert all(sorted(e) == list(range(n_l)) for e in epochs) and epochs[0] != epochs[1]
  assert sorted(i for _, batch in seen[:10] for i in batch) == list(range(100, 100 + n_u))
  assert [ids(e) for e in dataset.take(13)] == seen, "another iterator of the same dataset"

  def same_batch(a, b):
    assert ids(a) == ids(b)

  size = resumes_at_the_same_element(dataset, 13, 6, same_batch)
  assert size < 30_000, f"the iterator's checkpoint holds {size} bytes"  # 240 images of 768 B: 184 kB


def test_big_teacher_is_freed_before_the_student_is_built(tmp_path, monkeypatch):
  """A smoke-sized digits run: while the big teacher trains no student exists, and every variable of the big
  teacher's phase (network, EMA copy, optimizer slots) is freed before the student is built."""
  from mpl_tf import experiment, trainer  # pylint: disable=import-outside-toplevel
  built, big_variables, checks = [], [], {"alive_when_built": []}
  real_network, real_train_phase = experiment.network, trainer.train_phase

  def alive(refs):
    gc.collect()
    return sum(ref() is not None for ref in refs)

  def recording_network(*args, **kwargs):
    checks["alive_when_built"].append((gin.current_scope_str(), alive(big_variables)))
    net = real_network(*args, **kwargs)
    built.append(weakref.ref(net))
    return net

  def checking_train_phase(model, dataset, *, phase, **kwargs):
    checks[phase] = (alive(built), alive(big_variables))
    if phase == "mpl":
      checks["mpl_teacher"] = model.teacher.name
    out = real_train_phase(model, dataset, phase=phase, **kwargs)
    if phase == "teacher":
      big_variables.extend(weakref.ref(v) for v in model.variables + model.optimizer.variables())
    return out

  monkeypatch.setattr(experiment, "network", recording_network)
  monkeypatch.setattr(trainer, "train_phase", checking_train_phase)
  gin.clear_config()
  gin.add_config_file_search_path(ROOT)
  gin.parse_config_files_and_bindings(
      [os.path.join(ROOT, "gin/digits_reduced_mpl.gin"), os.path.join(ROOT, "gin/smoke.gin")],
      ["run.steps = 2", "run.teacher_pretrain_steps = 2", "run.finetune_steps = 0", "run.export = False",
       "big_teacher/optimizer.warmup_steps = 0", "teacher/optimizer.warmup_steps = 0",
       "student/optimizer.warmup_steps = 0", "build_dataset.eval_batch_size = 500"])
  try:
    metrics = experiment.run(str(tmp_path)).metrics
  finally:
    gin.clear_config()
  assert checks["teacher"] == (1, 0), "only the big teacher's network exists while it trains"
  assert checks["alive_when_built"] == [("big_teacher", 0), ("", 0)], "the student comes after the big teacher"
  assert checks["mpl"] == (1, 0) and checks["mpl_teacher"] == "reduced_teacher"
  assert os.path.exists(tmp_path / "predictions" / "big_teacher.npz")
  assert metrics["method"] == "reduced_mpl" and metrics["step"] == 2
  for key in ("student/accuracy", "teacher/accuracy", "big_teacher/accuracy"):
    assert 0.0 <= metrics[key] <= 1.0
