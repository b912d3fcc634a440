"""Training runs end to end: determinism, baselines, a small convergence run and the command line."""

import numpy as np
import tensorflow as tf

from mpl_tf import MetaPseudoLabelsModel
from mpl_tf import losses
from mpl_tf.algorithms.pseudo_labels import PseudoLabelsModel
from mpl_tf.algorithms.supervised import SupervisedModel
from mpl_tf.algorithms.uda import UDAModel, UDASettings
from mpl_tf.data import build_dataset
from mpl_tf.keras import keras
from mpl_tf.models.mlp import build_mlp


def moons(strong_noise=0.0):
  """TwoMoon with all 6 labeled points and 30 unlabeled ones a step (two views when there is noise)."""
  return build_dataset("two_moons", seed=0, batch_size=6, uda_ratio=5, two_views=strong_noise > 0,
                       noise_stddev=strong_noise)


def train_mpl(seed, steps=60, **options):
  keras.utils.set_random_seed(seed)
  data = moons(strong_noise=0.2)
  model = MetaPseudoLabelsModel(teacher=build_mlp(2, (2,), hidden=(16,), activation="relu"),
                                student=build_mlp(2, (2,), hidden=(16,), activation="relu"),
                                uda=UDASettings(weight=1.0), ema_decay=0.9, seed=seed, **options)
  model.compile(teacher_optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                student_optimizer=keras.optimizers.SGD(0.1, momentum=0.9), steps_per_execution=10)
  model.fit(data.train, steps_per_epoch=steps, epochs=1, verbose=0)
  return model


def weights(model):
  return [w.copy() for w in model.get_weights()]


def test_two_runs_with_the_same_seed_give_identical_weights():
  tf.config.experimental.enable_op_determinism()
  first, second, other = train_mpl(3), train_mpl(3), train_mpl(4)
  for a, b in zip(weights(first), weights(second)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(weights(first), weights(other)))


def test_each_method_trains_with_fit_and_reports_namespaced_metrics():
  data = moons(strong_noise=0.2)
  supervised = SupervisedModel(build_mlp(2, (2,)))
  supervised.compile(optimizer=keras.optimizers.SGD(0.5))
  history = supervised.fit(data.labeled, steps_per_epoch=50, epochs=2, verbose=0).history
  assert history["student/loss"][1] < history["student/loss"][0]

  uda = UDAModel(build_mlp(2, (2,)), uda=UDASettings(weight=1.0, threshold=0.0))
  uda.compile(optimizer=keras.optimizers.SGD(0.5))
  assert {"uda/loss", "uda/mask_ratio"} <= set(uda.fit(data.train, steps_per_epoch=5, verbose=0).history)

  teacher = supervised.student
  frozen = weights(teacher)
  pseudo = PseudoLabelsModel(teacher=teacher, student=build_mlp(2, (2,)), labeled_weight=0.0)
  pseudo.compile(optimizer=keras.optimizers.SGD(0.5))
  pseudo.fit(data.train, steps_per_epoch=20, verbose=0)
  for a, b in zip(frozen, teacher.get_weights()):
    np.testing.assert_array_equal(a, b)  # the Pseudo Labels teacher is fixed
  results = pseudo.evaluate(data.test, verbose=0, return_dict=True)
  assert set(results) == {"student/loss", "student/accuracy", "teacher/loss", "teacher/accuracy"}


def test_mpl_student_learns_the_moons_from_pseudo_labels_alone():
  """Convergence: the student never sees a label, yet matches a well-trained teacher on the moons."""
  model = train_mpl(0, steps=1500)
  results = model.evaluate(moons().test, verbose=0, return_dict=True)
  assert results["teacher/accuracy"] > 0.8
  assert results["student/accuracy"] > 0.8
  assert results["student/accuracy"] > results["teacher/accuracy"] - 0.1


def test_pseudo_labels_teacher_labels_the_weak_view_not_the_strong_one():
  x_l, y_l, u_weak = (tf.constant(np.random.default_rng(0).normal(size=s), tf.float32) for s in ((4, 2), (4,), (6, 2)))
  y_l = tf.cast(tf.abs(y_l) > 0.5, tf.int32)
  u_strong = u_weak + 3.0  # another image altogether, so the two views give different logits
  teacher = build_mlp(2, (2,), hidden=(8,), activation="tanh", init_scale=1.0, seed=1)
  model = PseudoLabelsModel(teacher=teacher, student=build_mlp(2, (2,), seed=2), pseudo_labels="argmax")
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  seen = []
  real = losses.pseudo_labels
  losses.pseudo_labels = lambda logits, mode, seed: (seen.append(logits), real(logits, mode, seed))[1]
  try:
    model.train_step(((x_l, y_l), (u_weak, u_strong)))
  finally:
    losses.pseudo_labels = real
  np.testing.assert_allclose(seen[0].numpy(), teacher(u_weak).numpy(), rtol=1e-6)
  assert not np.allclose(teacher(u_strong).numpy(), teacher(u_weak).numpy(), atol=1e-3)
