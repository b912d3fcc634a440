"""Golden values for the pure math in mpl_tf.losses and mpl_tf.schedules, computed by hand."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mpl_tf import losses
from mpl_tf import schedules
from mpl_tf.keras import keras


def test_cross_entropy_matches_hand_computation():
  logits = tf.constant([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
  assert losses.cross_entropy([1], logits).numpy()[0] == pytest.approx(-math.log(0.75), rel=1e-6)
  # smoothing 0.2 over 2 classes: target [0.1, 0.9]
  expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
  assert losses.cross_entropy([1], logits, 0.2).numpy()[0] == pytest.approx(expected, rel=1e-6)


def test_uda_consistency_masks_by_sharpened_confidence_and_divides_by_whole_batch():
  weak = tf.constant([[0.0, math.log(3.0)], [0.0, 0.0]])  # confident 0.75, uncertain 0.5
  strong = tf.constant([[0.0, 0.0], [0.0, 0.0]])
  loss, mask_ratio = losses.uda_consistency(weak, strong, temperature=1.0, threshold=0.6)
  # only the first example is kept; CE([.25,.75], [.5,.5]) = log 2; divided by the batch of 2.
  assert mask_ratio.numpy() == pytest.approx(0.5)
  assert loss.numpy() == pytest.approx(math.log(2.0) / 2, rel=1e-6)
  # Sharpening cannot lift a uniform prediction over the threshold: the second example stays masked.
  _, ratio_sharp = losses.uda_consistency(weak, strong, temperature=0.5, threshold=0.6)
  assert ratio_sharp.numpy() == pytest.approx(0.5)


def test_uda_temperature_sharpens_both_the_target_and_the_mask():
  """weak [1/4, 3/4] at T = 0.5 -> [1/10, 9/10]; weak [0.4, 0.6] -> [16/52, 36/52] = 0.692 >= 0.65 (kept only
  when sharpened). Strong [1/5, 4/5]. Loss = (CE([.1, .9], [.2, .8]) + CE([16/52, 36/52], [.2, .8])) / 2."""
  weak = tf.math.log(tf.constant([[0.25, 0.75], [0.4, 0.6]]))
  strong = tf.math.log(tf.constant([[0.2, 0.8], [0.2, 0.8]]))
  loss, mask_ratio = losses.uda_consistency(weak, strong, temperature=0.5, threshold=0.65)

  def ce(p, q):
    return -(p * math.log(q) + (1 - p) * math.log(1 - q))
  assert mask_ratio.numpy() == pytest.approx(1.0)
  assert loss.numpy() == pytest.approx((ce(0.1, 0.2) + ce(16 / 52, 0.2)) / 2, rel=1e-5)
  # at temperature 1 the second example is masked and the first keeps its unsharpened target
  loss_t1, ratio_t1 = losses.uda_consistency(weak, strong, temperature=1.0, threshold=0.65)
  assert ratio_t1.numpy() == pytest.approx(0.5)
  assert loss_t1.numpy() == pytest.approx(ce(0.25, 0.2) / 2, rel=1e-5)


def test_mpl_term_reduces_by_mean_or_sum_and_smoothing_mixes_in_the_uniform():
  logits = tf.math.log(tf.constant([[0.5, 0.5], [0.25, 0.75]]))
  labels = tf.constant([0, 1])
  total = math.log(2.0) - math.log(0.75)
  assert losses.mpl_teacher_loss(2.0, labels, logits, "sum").numpy() == pytest.approx(2.0 * total, rel=1e-6)
  assert losses.mpl_teacher_loss(2.0, labels, logits, "mean").numpy() == pytest.approx(total, rel=1e-6)
  with pytest.raises(ValueError, match="reduction"):
    losses.mpl_teacher_loss(2.0, labels, logits, "max")
  np.testing.assert_allclose(losses.smooth_targets(tf.constant([[1.0, 0.0, 0.0]]), 0.3).numpy(),
                             [[0.8, 0.1, 0.1]], rtol=1e-6)


def test_feedback_is_old_minus_new():
  assert losses.feedback_from_losses(tf.constant(2.0), tf.constant(1.5)).numpy() == pytest.approx(0.5)
  h = losses.feedback_dot_product(0.1, [tf.constant([1.0, 2.0])], [tf.constant([3.0, -1.0])])
  assert h.numpy() == pytest.approx(0.1)


def test_cosine_feedback_is_the_gradients_cosine_over_all_variables():
  """a = ([1, 2], [2], [4]), b = ([2, -1], [2], None): a . b = 2 - 2 + 4 = 4, |a| = sqrt(1 + 4 + 4 + 16) = 5 (the
  variable b does not reach still counts in |a|), |b| = sqrt(4 + 1 + 4) = 3, so h = 4 / 15."""
  a = [tf.constant([1.0, 2.0]), tf.constant([2.0]), tf.constant([4.0])]
  b = [tf.constant([2.0, -1.0]), tf.constant([2.0]), None]
  assert losses.feedback_cosine(a, b).numpy() == pytest.approx(4 / 15, rel=1e-6)
  # the dot product's sign, without its scale: any positive factor on either gradient leaves h alone
  assert losses.feedback_dot_product(0.1, a, b).numpy() == pytest.approx(0.4, rel=1e-6)
  scaled = losses.feedback_cosine([2.5 * g for g in a], [1e-3 * g if g is not None else None for g in b])
  assert scaled.numpy() == pytest.approx(4 / 15, rel=1e-6)
  assert losses.feedback_cosine(a, [None if g is None else -g for g in b]).numpy() == pytest.approx(-4 / 15, rel=1e-6)
  assert losses.feedback_cosine(a, [3.0 * g for g in a]).numpy() == 1.0  # parallel: 1, rounding clipped off
  # a zero gradient on either side: h = 0, not NaN
  assert losses.feedback_cosine(a, [tf.zeros(2), tf.zeros(1), None]).numpy() == 0.0
  assert losses.feedback_cosine([tf.zeros(2), tf.zeros(1), tf.zeros(1)], b).numpy() == 0.0


def test_sampled_pseudo_labels_follow_the_teacher_distribution_and_are_seeded():
  logits = tf.math.log(tf.constant([[0.2, 0.8]] * 20000))
  labels = losses.pseudo_labels(logits, "sample", tf.constant([1, 2], tf.int64))
  assert labels.dtype == tf.int32
  assert np.mean(labels.numpy()) == pytest.approx(0.8, abs=0.01)
  again = losses.pseudo_labels(logits, "sample", tf.constant([1, 2], tf.int64))
  np.testing.assert_array_equal(labels.numpy(), again.numpy())
  assert losses.pseudo_labels(logits[:3], "argmax", tf.constant([0, 0], tf.int64)).numpy().tolist() == [1, 1, 1]
  with pytest.raises(ValueError, match="sample"):
    losses.pseudo_labels(logits, "bogus", tf.constant([0, 0], tf.int64))


def test_ema_decay_warmup_moving_average_and_ramp():
  assert losses.ema_decay(0.995, 0).numpy() == pytest.approx(0.1)
  assert losses.ema_decay(0.995, 10_000).numpy() == pytest.approx(0.995)
  assert losses.moving_average(tf.constant(1.0), tf.constant(3.0), 0.75).numpy() == pytest.approx(1.5)
  assert losses.linear_ramp(250, 1000).numpy() == pytest.approx(0.25)
  assert losses.linear_ramp(5000, 1000).numpy() == pytest.approx(1.0)
  assert losses.linear_ramp(0, 0).numpy() == pytest.approx(1.0)


def test_warmup_cosine_with_wait_steps():
  lr = schedules.WarmupCosine(1.0, total_steps=110, warmup_steps=10, wait_steps=0)
  assert lr(0).numpy() == pytest.approx(0.1)
  assert lr(9).numpy() == pytest.approx(1.0)
  assert lr(60).numpy() == pytest.approx(0.5)   # halfway through the cosine
  assert lr(110).numpy() == pytest.approx(0.0, abs=1e-7)
  waited = schedules.WarmupCosine(1.0, total_steps=120, warmup_steps=10, wait_steps=10)
  assert waited(9).numpy() == 0.0
  assert waited(10).numpy() == pytest.approx(0.1)
  with pytest.raises(ValueError, match="total_steps"):
    schedules.WarmupCosine(1.0, total_steps=5, warmup_steps=10)


def test_a_waiting_schedule_holds_the_optimizer_at_zero_then_restarts_its_clock():
  opt = keras.optimizers.SGD(schedules.WarmupCosine(1.0, total_steps=103, warmup_steps=4, wait_steps=3))
  var = tf.Variable([1.0])
  seen = []
  for _ in range(5):
    seen.append(float(schedules.learning_rate_at(opt)))
    opt.apply_gradients([(tf.constant([1.0]), var)])
  assert seen[:3] == [0.0, 0.0, 0.0]
  assert seen[3] == pytest.approx(0.25) and seen[4] == pytest.approx(0.5)
  assert var.numpy()[0] == pytest.approx(1.0 - 0.25 - 0.5)
