"""`python -m mpl_tf.predict --export_dir=DIR/export/student FILE...`: predictions of an exported student.

Each FILE is an image (PNG/JPEG/BMP/GIF, decoded to the exported model's channel count) or a `.npz` whose
`x_test` (or `x`) array holds uint8 images [N, H, W, C] (or float features for TwoMoon). Prints one line per
input: the file (and index), the predicted label and its probability.
"""
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "SavedModel written by mpl_tf.train (WORKDIR/export/student)")
flags.mark_flag_as_required("export_dir")


def load_inputs(path: str, spec: tf.TensorSpec) -> np.ndarray:
  """Reads one file into a batch matching the signature's dtype and shape, or exits naming the mismatch."""
  if path.endswith(".npz"):
    with np.load(path) as f:
      key = "x_test" if "x_test" in f else "x"
      if key not in f:
        raise SystemExit(f"{path}: no 'x_test' or 'x' array (has {sorted(f.files)})")
      batch = f[key]
  else:
    channels = spec.shape[-1] if spec.shape.rank == 4 else 0
    try:
      batch = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False).numpy()[None]
    except tf.errors.OpError as e:
      raise SystemExit(f"{path}: not a readable image ({e.message.splitlines()[0]})") from e
  if batch.ndim == spec.shape.rank - 1:
    batch = batch[..., None]
  expected = tuple(spec.shape[1:])
  if tuple(batch.shape[1:]) != expected:
    raise SystemExit(f"{path}: inputs of shape {tuple(batch.shape[1:])}, the model expects {expected}")
  if batch.dtype != spec.dtype.as_numpy_dtype:
    raise SystemExit(f"{path}: inputs of dtype {batch.dtype}, the model expects {spec.dtype.name}")
  return batch


def main(argv):
  files = argv[1:]
  if not files:
    raise SystemExit("give at least one image or .npz file to predict")
  model = tf.saved_model.load(FLAGS.export_dir)
  serve = model.signatures["serving_default"]
  name, spec = next(iter(serve.structured_input_signature[1].items()))
  for path in files:
    batch = load_inputs(path, spec)
    out = serve(**{name: tf.constant(batch)})
    for i, (label, probs) in enumerate(zip(out["labels"].numpy(), out["probabilities"].numpy())):
      where = f"{path}[{i}]" if len(batch) > 1 else path
      print(f"{where}\t{int(label)}\t{probs[label]:.4f}")
  sys.stdout.flush()


def run():
  """Console-script entry point (`mpl-predict`, pyproject.toml)."""
  app.run(main)


if __name__ == "__main__":
  run()
