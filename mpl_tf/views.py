"""What the networks see: a PNG grid of some training images, their weak view and several strong views.

  mpl-views --gin_file=gin/own_data.gin --gin_bindings="build_dataset.path = 'my.npz'" --out=views.png
  (or python -m mpl_tf.views ...)

Uses the run's own `build_dataset` bindings (gin files and bindings as for `mpl-train`), so the
views are exactly those of training: the dataset's defaults (for own data: no flips, class-keeping RandAugment
ops, Cutout of a quarter of the side, fill with the images' background colour) with any bindings applied.
Each row is one labeled image: the original, the weak view (what the teacher's labels on the weak view and
the finetuning see), then --strong strong views (what the student trains on with the teacher's labels). If the
strong views no longer look like their class to you, the student cannot learn the class from them either.
"""
import os

from absl import app
from absl import flags

from mpl_tf import console, usage

FLAGS = flags.FLAGS
FLAG_NAMES = ("gin_file", "gin_bindings", "out", "images", "strong", "seed", console.LEVEL_FLAG)


def define_flags():
  """Defined only when run as a program, so that tests can import the module beside the other entry points."""
  flags.DEFINE_multi_string("gin_file", ["gin/digits.gin"], "gin file(s) of the run whose views to show")
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings, e.g. \"build_dataset.path = 'my.npz'\"")
  flags.DEFINE_string("out", "views.png", "PNG file to write")
  flags.DEFINE_integer("images", 8, "labeled images to show (one row each)")
  flags.DEFINE_integer("strong", 5, "strong views per image")
  flags.DEFINE_integer("seed", 0, "seed of the split and of the augmentation draws")
  flags.DEFINE_enum(console.LEVEL_FLAG, None, ["0", "1", "2", "3"], console.LEVEL_HELP)


def view_grid(data, num_images: int, num_strong: int, seed: int = 0):
  """[rows, 2 + num_strong] images in [0, 1] (HWC) and the row labels, from a `DatasetBundle`.

  Strong view k of image i is drawn from the example seed (seed, k * num_images + i), with the same functions
  training uses (`Views.draws`, `weak`, `strong`)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  raw = data.raw
  if raw is None:
    raise ValueError(f"{data.name} is not an image dataset: it has no views to show")
  indices = raw.split.labeled[:num_images]
  n = len(indices)

  def draws(k):
    return tf.stack([raw.views.draws(tf.constant([seed, k * n + i], tf.int64)) for i in range(n)])

  crop_seed = tf.constant([seed, -1], tf.int64)
  examples = raw.source.examples(indices).map(lambda x, y: (raw.prepare(x, crop_seed), y)).batch(n)
  images, labels = next(iter(examples))
  weak = raw.views.weak(images, draws(0))
  columns = [raw.views.finish(images), raw.views.finish(weak)]
  columns += [raw.views.finish(raw.views.strong(weak, draws(k + 1))) for k in range(num_strong)]
  grid = np.stack([c.numpy() for c in columns], axis=1)
  names = data.class_names or tuple(str(i) for i in range(data.num_classes))
  return grid, [names[int(y)] for y in tf.reshape(labels, [-1]).numpy()]


def save_grid(grid, row_labels, path: str) -> None:
  """Writes `view_grid`'s images as one PNG: a row per labeled image (its class on the left), titled columns."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows, cols = grid.shape[:2]
  fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
  titles = ["original", "weak"] + [f"strong {i + 1}" for i in range(cols - 2)]
  for r in range(rows):
    for c in range(cols):
      ax, image = axes[r][c], grid[r, c]
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0.0, vmax=1.0)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(titles[c], fontsize=8)
      if c == 0:
        ax.set_ylabel(row_labels[r], fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  console.start("mpl-views")
  console.log_to(None)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from mpl_tf import experiment  # pylint: disable=import-outside-toplevel
  from mpl_tf.data import augment  # pylint: disable=import-outside-toplevel
  experiment.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
  tf.random.set_global_generator(tf.random.Generator.from_seed(FLAGS.seed))
  tf.random.set_seed(FLAGS.seed)
  data = experiment.load_data(FLAGS.seed)
  grid, labels = view_grid(data, FLAGS.images, FLAGS.strong, FLAGS.seed)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  save_grid(grid, labels, FLAGS.out)
  print(f"{FLAGS.out}: {len(labels)} images of {data.split_name}; {augment.describe(data.augmentation)}")


def run():
  """Console script `mpl-views` (and `python -m mpl_tf.views`)."""
  define_flags()
  usage.exit_on_help("__main__", "mpl-views", __doc__, FLAG_NAMES,
                     more="The recipe's augmentation bindings: mpl-train --show_config --gin_file=...")
  with console.loading_tensorflow():
    from mpl_tf import cli, experiment  # pylint: disable=import-outside-toplevel,unused-import
  app.run(cli.reports_errors("mpl-views")(main))


if __name__ == "__main__":
  run()
