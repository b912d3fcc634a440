"""`mpl-predict --export_dir=WORKDIR/export/student INPUT...`: predictions of an exported student.

Each INPUT is an image file (PNG/JPEG/BMP/GIF), a folder (searched recursively for those, sorted) or a `.npz`
whose `x_test` (or `x`) array holds images [N, H, W(, C)] (or float features for TwoMoon); each row of an
array is one input, named `FILE.npz[i]`. Images are converted to the export's channel count and, where their
size differs, resized to its input size as the folder data source does (bilinear with antialias, clipped, rounded
to uint8; float arrays stay float). Feature exports take only .npz arrays of exactly their shape.

Output, to stdout or `--output=FILE`: `--format=csv` (default) has the header
`input,label,class_name,probability` and, with `--top_k=K` > 1, the columns `class_name_2,probability_2` up to
K; `--format=json` is a list of objects {input, label, class_name, probability, top: [{label, class_name,
probability}, ...]} with the `--top_k` most probable classes. Class names come from the export's metadata.

An input that cannot be read is reported on stderr (the first 20 one line each, then a count) and does not stop
the others. Exit status: 0 when every input was predicted; 1 when some could not be read (the others are still
printed) or on a bad flag; 2 when no input was found or none could be read. TensorFlow's Python logs and warnings
go to `--log_file` (unset: dropped), its C++ log lines are off below fatal ones unless `--tf_log_level` says
otherwise (`mpl_tf.console`).
"""
import csv
import json
import os
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

from absl import flags

from mpl_tf import console, usage

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "SavedModel written by mpl_tf.train (WORKDIR/export/student).")
flags.DEFINE_enum("format", "csv", ["csv", "json"], "Output format: csv (one row an input) or json (a list).")
flags.DEFINE_integer("top_k", 1, "How many of the most probable classes to give per input.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Inputs per call of the model (bounds the memory a big folder takes).",
                     lower_bound=1)
flags.DEFINE_string("output", None, "Write the predictions to this file instead of stdout.")
flags.DEFINE_string("log_file", None, "Append TensorFlow's Python logs and warnings to this file (default: "
                    "they are dropped; the console shows only predictions, unreadable inputs and errors).")
flags.DEFINE_enum(console.LEVEL_FLAG, None, ["0", "1", "2", "3"], console.LEVEL_HELP)
usage.exit_on_help(__name__, "mpl-predict", __doc__, [
    "export_dir", "format", "top_k", "batch_size", "output", "log_file", console.LEVEL_FLAG],
    more="Inputs: image files, folders of images (searched recursively) and .npz files (x_test or x), as "
         "arguments after the flags: mpl-predict --export_dir=WORKDIR/export/student photos/ more.npz")

with console.loading_tensorflow():  # TensorFlow's C++ log level is set before it loads (--tf_log_level)
  from absl import app
  import numpy as np
  import tensorflow as tf

  from mpl_tf import cli
  from mpl_tf import export as export_lib
  from mpl_tf.data import folder_source

MAX_REPORTED = 20  # unreadable inputs reported one line each; the rest are counted


class InputError(ValueError):
  """An input that could not be read; the message says why."""


def find_inputs(paths: Sequence[str]) -> List[str]:
  """The inputs named on the command line: folders expanded to their image files (recursively, sorted),
  everything else kept as given (a missing file fails when it is read)."""
  found = []
  for path in paths:
    found += folder_source.image_files(path) if os.path.isdir(path) else [path]
  return found


def match_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Images [..., H, W, C] converted to `channels` (1 or 3): alpha dropped, gray repeated, RGB to luma."""
  have = images.shape[-1]
  if have == channels:
    return images
  if have in (2, 4):
    return match_channels(images[..., :have - 1], channels)
  if have == 1 and channels == 3:
    return np.repeat(images, 3, axis=-1)
  if have == 3 and channels == 1:
    gray = tf.image.rgb_to_grayscale(tf.cast(images, tf.float32))
    if images.dtype != np.uint8:
      return gray.numpy()
    return tf.cast(tf.clip_by_value(tf.round(gray), 0, 255), tf.uint8).numpy()
  raise InputError(f"images with {have} channels, the model takes {channels}")


def fit_images(images: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
  """Images [N, H, W(, C)] (uint8, or float in [0, 255]) brought to the export's [H, W, C]: channels matched,
  resized unless they already have that size (uint8 as `folder_source.resize_image`; floats clipped, kept float)."""
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise InputError(f"an array of shape {images.shape}, expected images [N, H, W] or [N, H, W, C]")
  if images.dtype != np.uint8:
    images = images.astype(np.float32)
  images = match_channels(images, shape[-1])
  if images.shape[1:3] == tuple(shape[:2]):
    return images
  if images.dtype == np.uint8:
    return folder_source.resize_image(images, shape[:2]).numpy()
  return tf.clip_by_value(tf.image.resize(images, shape[:2], antialias=True), 0.0, 255.0).numpy()


# An image whose height or width is below this fraction of the model's input is reported: upsampled that far, it
# holds almost nothing for the model (a 1x1 image of a 28x28 model was answered with 94 % confidence).
SMALL_FRACTION = 0.25


def too_small(size: Tuple[int, int], shape: Tuple[int, ...]) -> bool:
  """Whether an image of (height, width) `size` is far below the export's input `shape` (`SMALL_FRACTION`)."""
  return size[0] < SMALL_FRACTION * shape[0] or size[1] < SMALL_FRACTION * shape[1]


def read_input(path: str, shape: Tuple[int, ...], images: bool,
               small: Optional[List[Tuple[str, Tuple[int, int]]]] = None) -> List[Tuple[str, np.ndarray]]:
  """(name, example) pairs of one file, each example of the export's `shape`; raises InputError. Images far
  below the input size are appended to `small` as (name, (height, width))."""
  if path.endswith(".npz"):
    try:
      with np.load(path) as f:
        key = "x_test" if "x_test" in f.files else "x"
        batch, keys = (f[key] if key in f.files else None), sorted(f.files)
    except Exception as e:  # pylint: disable=broad-except  (missing, truncated, not a zip, pickled: one line each)
      raise InputError(f"not a readable .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if batch is None:
      raise InputError(f"no 'x_test' or 'x' array (has {keys})")
    if images:
      if small is not None and batch.ndim >= 3 and too_small(batch.shape[1:3], shape):
        small += [(f"{path}[{i}]", tuple(batch.shape[1:3])) for i in range(len(batch))]
      batch = fit_images(batch, shape)
    elif tuple(batch.shape[1:]) != tuple(shape):
      raise InputError(f"inputs of shape {tuple(batch.shape[1:])}, the model expects {tuple(shape)}")
    return [(f"{path}[{i}]", x) for i, x in enumerate(batch)]
  if not images:
    raise InputError(f"an image file, but the model takes features of shape {tuple(shape)} (give a .npz)")
  if not os.path.isfile(path):
    raise InputError("no such file or folder")
  try:
    image = folder_source.read_image(path)
  except ValueError as e:
    raise InputError(str(e).replace(f" {path}", "")) from None
  if small is not None and too_small(image.shape[:2], shape):
    small.append((path, tuple(image.shape[:2])))
  return [(path, fit_images(image[None], shape)[0])]


def batches(paths: Sequence[str], shape: Tuple[int, ...], images: bool, batch_size: int,
            failures: List[Tuple[str, str]],
            small: Optional[List[Tuple[str, Tuple[int, int]]]] = None) -> Iterator[Tuple[List[str], np.ndarray]]:
  """Reads `paths` in order and yields (names, batch) of at most `batch_size` examples; each unreadable file is
  appended to `failures` as (path, reason) and reported on stderr (the first MAX_REPORTED)."""
  names, examples = [], []
  for path in paths:
    try:
      read = read_input(path, shape, images, small)
    except InputError as e:
      failures.append((path, str(e)))
      if len(failures) <= MAX_REPORTED:
        print(f"mpl-predict: {path}: {e}", file=sys.stderr)
      continue
    for name, example in read:
      names.append(name)
      examples.append(example)
      if len(names) == batch_size:
        yield names, np.stack(examples)
        names, examples = [], []
  if names:
    yield names, np.stack(examples)


def predict_batch(export: export_lib.Export, batch: np.ndarray) -> np.ndarray:
  """Probabilities [N, K] of one batch: uint8 images and features through `serving_default`, float images
  through `preprocessed` (scaled to [0, 1] as the pipeline does; rounded to uint8 for older exports)."""
  if not export.images:
    return export.predict(batch.astype(np.float32))["probabilities"]
  if batch.dtype == np.uint8:
    return export.predict(batch)["probabilities"]
  if export.preprocessed is not None:
    return export.predict(np.clip(batch, 0.0, 255.0) / np.float32(255.0), preprocessed=True)["probabilities"]
  return export.predict(np.clip(np.round(batch), 0, 255).astype(np.uint8))["probabilities"]


def records(names: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str], top_k: int):
  """One dict a prediction: input, label, class_name, probability and `top` [(label, class_name, p)...]."""
  out = []
  for name, probs in zip(names, probabilities):
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [{"label": int(c), "class_name": class_names[c], "probability": float(probs[c])} for c in order]
    out.append({"input": name, **top[0], "top": top})
  return out


def csv_header(top_k: int) -> List[str]:
  return ["input", "label", "class_name", "probability"] + [
      f"{column}_{i}" for i in range(2, top_k + 1) for column in ("class_name", "probability")]


def csv_row(record) -> List[str]:
  row = [record["input"], record["label"], record["class_name"], f"{record['probability']:.8g}"]
  for entry in record["top"][1:]:
    row += [entry["class_name"], f"{entry['probability']:.8g}"]
  return row


def _exit(message: str, status: int):
  print(f"mpl-predict: {message}", file=sys.stderr)
  raise SystemExit(status)


@cli.reports_errors("mpl-predict")  # a bad export directory: one line, exit 1
def main(argv):
  console.start("mpl-predict")
  console.log_to(FLAGS.log_file, "mpl-predict")
  if not FLAGS.export_dir:
    raise SystemExit("mpl-predict: give --export_dir=WORKDIR/export/student")
  export = export_lib.load_export(FLAGS.export_dir)
  paths = find_inputs(argv[1:])
  if not paths:
    _exit("no inputs found: give image files, folders of images or .npz files" if len(argv) > 1 else
          "give at least one image, folder or .npz file to predict", 2)
  top_k = min(FLAGS.top_k, len(export.class_names))
  failures: List[Tuple[str, str]] = []
  small: List[Tuple[str, Tuple[int, int]]] = []
  predicted, collected = 0, []
  stream = open(FLAGS.output, "w", newline="") if FLAGS.output else sys.stdout  # pylint: disable=consider-using-with
  try:
    writer = csv.writer(stream, lineterminator="\n")
    if FLAGS.format == "csv":
      writer.writerow(csv_header(top_k))
    for names, batch in batches(paths, export.input_shape, export.images, FLAGS.batch_size, failures, small):
      batch_records = records(names, predict_batch(export, batch), export.class_names, top_k)
      predicted += len(batch_records)
      if FLAGS.format == "csv":
        writer.writerows(csv_row(r) for r in batch_records)
        stream.flush()
      else:
        collected += batch_records
    if FLAGS.format == "json":
      json.dump(collected, stream, indent=1)
      stream.write("\n")
  finally:
    if stream is not sys.stdout:
      stream.close()
    else:
      stream.flush()
  if small:
    (name, (h, w)), (height, width) = small[0], export.input_shape[:2]
    print(f"mpl-predict: warning: {len(small)} input(s) far smaller than the model's {height}x{width} input (the "
          f"first: {name}, {h}x{w}); upsampled, they hold little for the model to go on", file=sys.stderr)
  if len(failures) > MAX_REPORTED:
    print(f"mpl-predict: ... and {len(failures) - MAX_REPORTED} more", file=sys.stderr)
  if not predicted:
    _exit(f"none of the {len(paths)} inputs could be read", 2)
  if failures:
    print(f"mpl-predict: {len(failures)} of {len(failures) + predicted} inputs could not be read", file=sys.stderr)
  return 1 if failures else 0


def _parse_flags(argv):
  """absl's flag parsing with a bad flag reported in one line (`mpl-predict: ...`, exit status 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    raise SystemExit(f"mpl-predict: {e}") from None


def run():
  """Console-script entry point (`mpl-predict`, pyproject.toml)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
