"""Does an image folder larger than TensorFlow's 2 GB graph limit train? The streamed folder source, measured.

Writes a folder dataset (`<dir>/<class>/<n>.png`) of random-noise PNGs whose decoded pixels total more than
--gigabytes (noise does not compress, so the files are about as large), builds
`build_dataset('folder', path=..., image_size=..., num_labeled=...)` on it, pulls --batches training batches
(labeled weak view + unlabeled weak and strong views) after --warmup, and prints one JSON line: images on disk,
their bytes on disk, decoded gigabytes, the training dataset's serialized graph bytes, peak RSS of the process,
seconds to build the dataset (the one decode pass that checks every file) and training batches/s.

  python tools/benchmark_folder_source.py                # 2.5 GB decoded: over the old in-graph limit
  python tools/benchmark_folder_source.py --quick        # a few MB, seconds: the test suite runs this

With an in-memory folder source the default size could not be built (its arrays would go into the graph, over
TensorFlow's 2 GB limit); the streamed source's graph holds the paths only. BENCHMARKS.md quotes the figures of
`--output studies/benchmarks/folder_source.json` (the JSON records the command).
"""
import json
import os
import resource
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS

QUICK = dict(gigabytes=0.003, side=64, image_size=32, num_classes=4, num_labeled=40, batch_size=8, batches=3,
             warmup=1)


def define_flags(values: flags.FlagValues = FLAGS):
  """Defines the flags in `values` (a test passes its own `flags.FlagValues`)."""
  for define, name, default, help_text in (
      (flags.DEFINE_float, "gigabytes", 2.5,
       "decoded size of the generated images, in GB (1e9 bytes); above 2 the old in-graph source could not build"),
      (flags.DEFINE_bool, "quick", False, "tiny run (a few MB, a few batches) for the test suite; overrides sizes"),
      (flags.DEFINE_string, "dir", None, "where to write the images (kept); default: a temporary folder, removed"),
      (flags.DEFINE_integer, "side", 256, "height and width of the generated RGB noise images"),
      (flags.DEFINE_integer, "image_size", 64, "build_dataset.image_size: the side images are resized to when read"),
      (flags.DEFINE_integer, "num_classes", 10, "class sub-folders; images are spread evenly over them"),
      (flags.DEFINE_integer, "num_labeled", 1000, "build_dataset.num_labeled (total, equal over the classes)"),
      (flags.DEFINE_integer, "batch_size", 64, "labeled examples a training batch (uda_ratio 1: as many unlabeled)"),
      (flags.DEFINE_integer, "batches", 50, "training batches timed"),
      (flags.DEFINE_integer, "warmup", 5, "training batches pulled before timing"),
      (flags.DEFINE_string, "output", None, "also write the JSON (with the command that made it) to this file")):
    define(name, default, help_text, flag_values=values)


def write_folder(root: str, count: int, side: int, num_classes: int) -> int:
  """Writes `count` random-noise side x side RGB PNGs under root/<class>/ in a parallel tf.data pass; bytes."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)

  def write(i):
    noise = tf.random.stateless_uniform([side, side, 3], seed=tf.stack([tf.constant(0, tf.int64), i]), maxval=256,
                                        dtype=tf.int32)
    path = tf.strings.join([root, "/class", tf.strings.as_string(i % num_classes), "/",
                            tf.strings.as_string(i, width=7, fill="0"), ".png"])
    data = tf.io.encode_png(tf.cast(noise, tf.uint8))
    tf.io.write_file(path, data)
    return tf.cast(tf.strings.length(data), tf.int64)

  sizes = tf.data.Dataset.range(count).map(write, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
  return int(sum(int(s.sum()) for s in sizes.as_numpy_iterator()))


def benchmark(root: str, gigabytes: float, side: int, image_size: int, num_classes: int, num_labeled: int,
              batch_size: int, batches: int, warmup: int) -> dict:
  """Writes the folder under `root`, builds the dataset, times the batches; the JSON line's fields."""
  from benchmark_input import measure_input  # pylint: disable=import-outside-toplevel
  from mpl_tf.data import build_dataset  # pylint: disable=import-outside-toplevel
  per_image = side * side * 3
  count = max(2 * num_classes, int(gigabytes * 1e9 // per_image) + 1)
  start = time.perf_counter()
  disk = write_folder(root, count, side, num_classes)
  written = time.perf_counter()
  data = build_dataset("folder", path=root, image_size=image_size, num_labeled=num_labeled, batch_size=batch_size,
                       seed=0)
  built = time.perf_counter()
  graph = len(data.train._as_serialized_graph().numpy())  # pylint: disable=protected-access
  seconds_per_batch = measure_input(data, warmup, batches)["s"]
  return dict(images=count, disk_gigabytes=round(disk / 1e9, 4), decoded_gigabytes=round(count * per_image / 1e9, 4),
              graph_bytes=graph, peak_rss_megabytes=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              write_s=round(written - start, 2), build_s=round(built - written, 2),
              batches_per_s=round(1 / seconds_per_batch, 3), batch_size=batch_size, image_size=image_size,
              side=side, num_labeled=data.num_labeled, num_unlabeled=data.num_unlabeled, num_test=data.num_test)


def run(values: flags.FlagValues = FLAGS) -> dict:
  """The benchmark with parsed flags `values`; prints the JSON line and returns it as a dict."""
  settings = {k: values[k].value for k in ("gigabytes", "side", "image_size", "num_classes", "num_labeled",
                                          "batch_size", "batches", "warmup")}
  if values.quick:
    settings.update(QUICK)
  root = values.dir or tempfile.mkdtemp(prefix="folder_benchmark_")
  try:
    result = benchmark(root, **settings)
  finally:
    if not values.dir:
      shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(result), flush=True)
  if values.output:
    command = ["python tools/benchmark_folder_source.py"] + [
        f"--{name}={values[name].value}" for name in ("gigabytes", "side", "image_size", "num_classes", "num_labeled",
                                                      "batch_size", "batches", "warmup", "quick")
        if values[name].present]
    with open(values.output, "w") as f:
      json.dump({"command": " ".join(command + [f"--output={values.output}"]), **result}, f, indent=1)
  return result


def main(argv):
  del argv
  run()


if __name__ == "__main__":
  define_flags()
  app.run(main)
