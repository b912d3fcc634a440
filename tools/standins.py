"""Stand-ins for a user's own images, built from data that ships offline, written in the own-data formats.

  python tools/standins.py --out=runs/standins            # writes every stand-in below

Each is a 10-class set of 100 labeled images (10 a class; shapes: 5 classes, 20 a class), an unlabeled pool
and a test set, in the layout a user gives the project (`build_dataset.name = 'npz'` or `'folder'`):
  digits_npz     scikit-learn digits, 8x8 grey, as `digits_npz.npz`   (x_train, y_train, x_unlabeled, x_test, y_test)
  digits_folder  the same images as PNG files: `digits_folder/{train/<class>,unlabeled,test/<class>}/*.png`
  digits28       digits upscaled to 28x28 grey (bilinear), .npz
  digits32_rgb   digits upscaled to 32x32, drawn in a random colour on a random darker background, .npz
  shapes32       generated 32x32 grey shapes (disc, square, triangle, cross, ring) at random position, size,
                 rotation and low contrast, over uneven backgrounds with distractor strokes and noise, .npz
Digits (1,797 images) are split the same way for every digits stand-in, seeded by --seed: 500 test images (50 a
class), 100 labeled, the other 1,197 unlabeled; shapes: 2,000 images, 500 test, 100 labeled, 1,400 unlabeled.
No image is in two parts.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so that tests can import the module beside other tools' flags."""
  flags.DEFINE_string("out", "runs/standins", "folder to write the stand-ins into")
  flags.DEFINE_list("which", ["digits_npz", "digits_folder", "digits28", "digits32_rgb", "shapes32"],
                    "stand-ins to write")
  flags.DEFINE_integer("seed", 0, "seed of the split and of the generated images")
  flags.DEFINE_bool("validation", False, "write <name>_val.npz: 200 unlabeled images held out as its test part, "
                    "the real test images left out (for choosing settings)")
  flags.DEFINE_integer("fresh_validation_test", 0, "with --validation, shapes32 only: N > 0 writes "
                       "shapes32_valbig.npz, whose test part is N freshly generated shapes (generator seed + 1000: "
                       "no image of the real set) instead of 200, for choices that 200 images cannot resolve")

NUM_LABELED_PER_CLASS, NUM_TEST_PER_CLASS = 10, 50
NUM_SHAPES_LABELED_PER_CLASS = 20


def split_digits(seed: int):
  """(x uint8 [N, 8, 8, 1] in 0..255, y, labeled idx, unlabeled idx, test idx), class-balanced, disjoint."""
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  y = digits.target.astype(np.int64)
  rng = np.random.default_rng(seed)
  labeled, test = [], []
  for c in range(10):
    members = rng.permutation(np.flatnonzero(y == c))
    test += list(members[:NUM_TEST_PER_CLASS])
    labeled += list(members[NUM_TEST_PER_CLASS:NUM_TEST_PER_CLASS + NUM_LABELED_PER_CLASS])
  unlabeled = np.setdiff1d(np.arange(len(y)), np.concatenate([labeled, test]))
  return x, y, np.array(labeled), rng.permutation(unlabeled), np.array(test)


def resize(x: np.ndarray, side: int) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  out = tf.image.resize(tf.cast(x, tf.float32), (side, side), method="bilinear")
  return np.clip(np.round(out.numpy()), 0, 255).astype(np.uint8)


def colourise(x: np.ndarray, seed: int) -> np.ndarray:
  """Grey [N, H, W, 1] -> RGB: each image's strokes in a random bright colour over a random dark background."""
  rng = np.random.default_rng(seed + 1)
  fg = rng.uniform(140, 255, size=(len(x), 1, 1, 3))
  bg = rng.uniform(0, 90, size=(len(x), 1, 1, 3))
  a = x.astype(np.float32) / 255.0
  return np.clip(np.round(bg + a * (fg - bg)), 0, 255).astype(np.uint8)


def shapes(n_per_class: int, side: int, seed: int):
  """Five generated shape classes in grey, made hard on purpose (so that 20 labels a class do not saturate
  supervised training): each at a random centre, size, rotation and low contrast, over a background with a
  random brightness gradient, one random distractor stroke and strong Gaussian noise."""
  rng = np.random.default_rng(seed + 2)
  yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
  images, labels = [], []
  for c in range(5):
    for _ in range(n_per_class):
      r = rng.uniform(0.16, 0.34) * side
      cy, cx = rng.uniform(r + 1, side - r - 1, size=2)
      angle = rng.uniform(0, 2 * np.pi)
      ry, rx = (yy - cy) / r, (xx - cx) / r
      dy, dx = np.cos(angle) * ry - np.sin(angle) * rx, np.sin(angle) * ry + np.cos(angle) * rx
      if c == 0:
        mask = dy ** 2 + dx ** 2 <= 1.0                                         # disc
      elif c == 1:
        mask = (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.8)                         # square
      elif c == 2:
        mask = (dy <= 0.8) & (dy >= -0.9 + 1.7 * np.abs(dx))                    # triangle
      elif c == 3:
        mask = ((np.abs(dy) <= 0.25) | (np.abs(dx) <= 0.25)) & (np.abs(dy) <= 1) & (np.abs(dx) <= 1)  # cross
      else:
        mask = (dy ** 2 + dx ** 2 <= 1.0) & (dy ** 2 + dx ** 2 >= 0.45)         # ring
      bg = rng.uniform(40, 140) + rng.uniform(-40, 40) * (yy - side / 2) / side + rng.uniform(-40, 40) * (
          xx - side / 2) / side
      image = np.where(mask, bg + rng.uniform(50, 110), bg)
      # a distractor stroke: a bright line segment anywhere (pixels within 1 of it)
      y0, x0, y1, x1 = rng.uniform(0, side, size=4)
      t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-6), 0, 1)
      near = (yy - y0 - t * (y1 - y0)) ** 2 + (xx - x0 - t * (x1 - x0)) ** 2 <= 1.0
      image = np.where(near, image + rng.uniform(35, 90), image)
      image = image + rng.normal(0, 20, size=mask.shape)
      images.append(np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None])
      labels.append(c)
  order = rng.permutation(len(labels))
  return np.stack(images)[order], np.array(labels, np.int64)[order]


def write_npz(path: str, x, y, labeled, unlabeled, test) -> None:
  np.savez_compressed(path, x_train=x[labeled], y_train=y[labeled], x_unlabeled=x[unlabeled], x_test=x[test],
                      y_test=y[test])


def write_folder(root: str, x, y, labeled, unlabeled, test) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for part, idx, with_class in (("train", labeled, True), ("unlabeled", unlabeled, False), ("test", test, True)):
    for i in idx:
      folder = os.path.join(root, part, str(y[i])) if with_class else os.path.join(root, part)
      os.makedirs(folder, exist_ok=True)
      tf.io.write_file(os.path.join(folder, f"{i:05d}.png"), tf.io.encode_png(x[i]))


def hold_out_validation(y, unlabeled, per_class: int):
  """(validation, rest of unlabeled): `per_class` images of each class taken from the unlabeled pool."""
  validation = np.concatenate([unlabeled[y[unlabeled] == c][:per_class] for c in np.unique(y)])
  return validation, np.setdiff1d(unlabeled, validation)


def build(name: str, out: str, seed: int, validation: bool = False, fresh_validation_test: int = 0) -> str:
  """Writes one stand-in under `out`; returns its path (the .npz file or the folder).

  validation=True writes `<name>_val.npz` instead, for choosing settings: its test part is 200 images held out
  of the unlabeled pool (class-balanced), the real test images are left out entirely, so a choice made on it
  never sees the images the results are reported on. `fresh_validation_test` (shapes32 only) replaces that
  test part by freshly generated shapes (`<name>_valbig.npz`; training parts unchanged)."""
  if fresh_validation_test and (name != "shapes32" or not validation):
    raise ValueError("fresh_validation_test is for the shapes32 validation stand-in (--validation)")
  x, y, labeled, unlabeled, test = split_digits(seed)
  if name == "digits_folder":
    if validation:
      raise ValueError("validation stand-ins are written as .npz: use digits_npz (the same images)")
    path = os.path.join(out, name)
    write_folder(path, x, y, labeled, unlabeled, test)
    return path
  if name == "digits28":
    x = resize(x, 28)
  elif name == "digits32_rgb":
    x = colourise(resize(x, 32), seed)
  elif name == "shapes32":
    x, y = shapes(400, 32, seed)
    rng = np.random.default_rng(seed + 3)
    labeled, test = [], []
    for c in range(5):
      members = rng.permutation(np.flatnonzero(y == c))
      test += list(members[:100])
      labeled += list(members[100:100 + NUM_SHAPES_LABELED_PER_CLASS])
    unlabeled = np.setdiff1d(np.arange(len(y)), np.concatenate([labeled, test]))
    labeled, test = np.array(labeled), np.array(test)
  elif name != "digits_npz":
    raise ValueError(f"unknown stand-in {name!r}")
  if validation:
    test, unlabeled = hold_out_validation(y, unlabeled, per_class=200 // len(np.unique(y)))
    name += "_val"
  path = os.path.join(out, f"{name}.npz")
  write_npz(path, x, y, labeled, unlabeled, test)
  if fresh_validation_test:
    x_test, y_test = shapes(fresh_validation_test // len(np.unique(y)), 32, seed + 1000)
    path = os.path.join(out, f"{name}big.npz")
    np.savez_compressed(path, x_train=x[labeled], y_train=y[labeled], x_unlabeled=x[unlabeled], x_test=x_test,
                        y_test=y_test)
  return path


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  for name in FLAGS.which:
    print(build(name, FLAGS.out, FLAGS.seed, FLAGS.validation, FLAGS.fresh_validation_test))


if __name__ == "__main__":
  define_flags()
  app.run(main)
