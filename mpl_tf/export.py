"""SavedModel export of the student that serves raw inputs: the preprocessing is inside the signature.

Signatures (both return `probabilities` [N, K] float32, `labels` [N] int64 and `class_names` [N] tf.string,
the predicted class's name: the dataset's `class_names`, else the label written out, "0", "1", ...):

  serving_default  For image datasets a batch of uint8 images of the dataset's shape [N, H, W, C] (values
                   0..255), scaled to [0, 1] as the input pipeline does. For feature datasets (TwoMoon)
                   float32 [N, D].
  preprocessed     float32 inputs exactly as the training pipeline feeds the network: images already scaled to
                   [0, 1], features as they are. An evaluation tool scores the export on the pipeline's test
                   batches with it and gets the numbers training reported, also for float images (scikit-learn
                   digits) that the uint8 signature cannot represent. On uint8 images x it equals
                   `serving_default` on x / 255.

Both take one input, named `images` (image datasets) or `features`. Their dtype and shape are fixed, so a wrong
image size, channel count or dtype is refused by TensorFlow with an error that names the expected spec instead of
being silently resized or cast (`mpl_tf.predict` resizes files for you).

Beside the SavedModel, `<path>/assets.extra/mpl_tf.json` (METADATA_KEYS) tells a user what the export is:
class names, number of classes, input shape, whether it takes images, the split and dataset it was trained on
and the run's gin configuration. `load_export(path)` loads both signatures and the metadata; an export written
before the metadata file existed still loads (metadata from the signature, class names "0".."K-1", no
`preprocessed` signature).

The student is copied into a fresh single-device float32 twin before export: tf-keras `export()` of a
DTensor or mixed-precision model is not reliable (docs/dtensor.md: its outputs differed), and a twin keeps the
SavedModel free of training-only state.
"""
import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

METADATA_FILE = os.path.join("assets.extra", "mpl_tf.json")
METADATA_KEYS = ("class_names", "num_classes", "input_shape", "images", "split_name", "dataset", "config")


class ServingModule(tf.Module):
  """Holds the student and its two serving functions."""

  def __init__(self, student, input_shape: Tuple[int, ...], images: bool, class_names: Sequence[str]):
    super().__init__()
    self.student = student
    self.images = images
    self.input_shape = tuple(int(d) for d in input_shape)
    self.class_names = tf.constant(list(class_names), tf.string)
    name = "images" if images else "features"
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, *input_shape], tf.uint8 if images else tf.float32, name=name)])
    self.serve_preprocessed = tf.function(self._outputs, input_signature=[
        tf.TensorSpec([None, *input_shape], tf.float32, name=name)])

  def _serve(self, inputs):
    x = tf.cast(inputs, tf.float32)
    return self._outputs(x / 255.0 if self.images else x)

  def _outputs(self, x):
    # A loaded signature does not re-check static shapes, and a pooled CNN would happily classify a 16x16
    # image: check at run time and name the expected shape.
    expected = tf.constant(self.input_shape, tf.int32)
    check = tf.debugging.assert_equal(
        tf.shape(x)[1:], expected,
        message=f"mpl_tf student: inputs must have shape [batch, {', '.join(map(str, self.input_shape))}]")
    with tf.control_dependencies([check]):
      x = tf.identity(x)
    logits = tf.cast(self.student(x, training=False), tf.float32)
    labels = tf.argmax(logits, axis=-1, output_type=tf.int64)
    return {"probabilities": tf.nn.softmax(logits, axis=-1), "labels": labels,
            "class_names": tf.gather(self.class_names, labels)}


def class_names_of(data, num_classes: int) -> Tuple[str, ...]:
  """The dataset's class names, or the labels written out ("0", "1", ...) when it has none."""
  names = getattr(data, "class_names", None)
  if not names:
    return tuple(str(i) for i in range(num_classes))
  if len(names) != num_classes:
    raise ValueError(f"export: {len(names)} class names for {num_classes} classes: {list(names)}")
  return tuple(str(n) for n in names)


def export_student(student, path: str, data, config: str = "") -> str:
  """Writes the SavedModel to `path` with its metadata file (module docstring) and returns `path`.

  `data` gives the input shape and kind, the number and names of the classes, the split and the dataset name
  (a `DatasetBundle`, or anything with `input_shape` and `num_classes`); `config` is stored in the metadata as
  is (the run's gin configuration).
  """
  from mpl_tf import layout  # pylint: disable=import-outside-toplevel  (keeps load_export light)
  input_shape = tuple(int(d) for d in data.input_shape)
  images = len(input_shape) == 3
  num_classes = int(getattr(data, "num_classes", None) or student.output_shape[-1])
  names = class_names_of(data, num_classes)
  module = ServingModule(layout.single_device_copy(student, dtype="float32"), input_shape, images, names)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve,
                                                "preprocessed": module.serve_preprocessed})
  metadata = {"class_names": list(names), "num_classes": num_classes, "input_shape": list(input_shape),
              "images": images, "split_name": getattr(data, "split_name", None),
              "dataset": getattr(data, "name", None), "config": config}
  os.makedirs(os.path.join(path, os.path.dirname(METADATA_FILE)), exist_ok=True)
  with open(os.path.join(path, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)
  return path


@dataclasses.dataclass(frozen=True)
class Export:
  """A loaded export (`load_export`).

  Attributes:
    path: the SavedModel directory.
    module: what `tf.saved_model.load` returned.
    serving_default: the raw-input signature (uint8 images or float32 features).
    preprocessed: the float32 pipeline-input signature; None for exports written before it existed.
    input_name: the signatures' input keyword (`images` or `features`).
    metadata: the METADATA_KEYS dict (from the metadata file, or the signature's spec for older exports).
  """
  path: str
  module: Any
  serving_default: Any
  preprocessed: Optional[Any]
  input_name: str
  metadata: Dict[str, Any]

  @property
  def class_names(self) -> Tuple[str, ...]:
    return tuple(self.metadata["class_names"])

  @property
  def input_shape(self) -> Tuple[int, ...]:
    return tuple(self.metadata["input_shape"])

  @property
  def images(self) -> bool:
    return bool(self.metadata["images"])

  def predict(self, inputs: np.ndarray, preprocessed: bool = False) -> Dict[str, np.ndarray]:
    """`probabilities`, `labels` and `class_names` (str) of one batch, as numpy. With `preprocessed` the batch
    goes to the `preprocessed` signature (float32 as the pipeline feeds the network), else to
    `serving_default`."""
    signature = self.preprocessed if preprocessed else self.serving_default
    if signature is None:
      raise ValueError(f"{self.path}: this export has no 'preprocessed' signature (written before it existed)")
    out = {k: v.numpy() for k, v in signature(**{self.input_name: tf.constant(inputs)}).items()}
    if "class_names" in out:
      out["class_names"] = np.array([n.decode("utf-8") for n in out["class_names"]], dtype=object)
    else:
      out["class_names"] = np.array([self.class_names[int(l)] for l in out["labels"]], dtype=object)
    return out


def load_export(path: str) -> Export:
  """Loads an export written by `export_student`, or raises ValueError naming `path` if it is not one."""
  if not os.path.isdir(path):
    raise ValueError(f"{path}: no such directory (expected a SavedModel written by mpl_tf.train, "
                     "WORKDIR/export/student)")
  if not tf.saved_model.contains_saved_model(path):
    raise ValueError(f"{path}: not a SavedModel (no saved_model.pb); give WORKDIR/export/student of a run")
  module = tf.saved_model.load(path)
  if "serving_default" not in module.signatures:
    raise ValueError(f"{path}: a SavedModel without a 'serving_default' signature, not an mpl_tf export")
  serve = module.signatures["serving_default"]
  input_name, spec = next(iter(serve.structured_input_signature[1].items()))
  metadata_path = os.path.join(path, METADATA_FILE)
  if os.path.exists(metadata_path):
    with open(metadata_path) as f:
      metadata = json.load(f)
  else:
    num_classes = int(serve.structured_outputs["probabilities"].shape[-1])
    metadata = {"class_names": [str(i) for i in range(num_classes)], "num_classes": num_classes,
                "input_shape": [int(d) for d in spec.shape[1:]], "images": spec.dtype == tf.uint8,
                "split_name": None, "dataset": None, "config": ""}
  return Export(path=path, module=module, serving_default=serve, preprocessed=module.signatures.get("preprocessed"),
                input_name=input_name, metadata=metadata)
