"""The paper's TwoMoon data (section 3.1, Figure 2): 2,000 points in two moons, 6 labeled.

The paper gives the counts (2,000 points, two clusters of 1,000, 3 labeled a cluster) but not the noise,
the scaling or how the labeled points were picked. We use scikit-learn's `make_moons`, standardise the
inputs to zero mean and unit variance per coordinate (so a sigmoid MLP at U(-0.1, 0.1) is not stuck in its
linear range for the whole budget), and pick the labeled points uniformly at random per class from a seed.
"""
from typing import Dict

import numpy as np
from sklearn import datasets as sk_datasets


def load_two_moons(num_points: int = 2000, num_labeled: int = 6, noise: float = 0.1,
                   seed: int = 0, standardize: bool = True) -> Dict[str, np.ndarray]:
  """Generates the moons and a class-balanced labeled subset.

  Returns a dict with `x` (float32 [N, 2]), `y` (int32 [N], the true class of every point),
  `labeled_index` and `unlabeled_index` (disjoint int64 index arrays that together cover all points).
  Accuracy in the TwoMoon experiment is measured on all N points, as in the paper's figure.
  """
  if num_points < 2 or num_points % 2:
    raise ValueError(f"two_moons needs an even number of points >= 2, got num_points={num_points}")
  if num_labeled < 2 or num_labeled % 2 or num_labeled >= num_points:
    raise ValueError(
        f"two_moons needs an even num_labeled (same count per moon) in [2, {num_points}), got {num_labeled}")
  x, y = sk_datasets.make_moons(n_samples=num_points, noise=noise, random_state=seed)
  x = x.astype(np.float32)
  if standardize:
    x = (x - x.mean(axis=0)) / x.std(axis=0)
  rng = np.random.default_rng(seed)
  per_class = num_labeled // 2
  labeled = np.sort(np.concatenate(
      [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in (0, 1)]))
  unlabeled = np.setdiff1d(np.arange(num_points), labeled)
  return {"x": x, "y": y.astype(np.int32), "labeled_index": labeled.astype(np.int64),
          "unlabeled_index": unlabeled.astype(np.int64)}

