"""SavedModel export of the student that serves raw inputs: the preprocessing is inside the signature.

For image datasets the `serving_default` signature takes a batch of uint8 images of the dataset's shape
[N, H, W, C] (values 0..255), scales them to [0, 1] as the input pipeline does, and returns
`probabilities` [N, K] (float32) and `labels` [N] (int64). For feature datasets (TwoMoon) it takes float32
[N, D]. The signature's shape and dtype are fixed, so a wrong image size, channel count or dtype is refused
by TensorFlow with an error that names the expected spec instead of being silently resized or cast.

The student is copied into a fresh single-device float32 twin before export: tf-keras `export()` of a
DTensor or mixed-precision model is not reliable (docs/dtensor.md: its outputs differed), and a twin keeps the
SavedModel free of training-only state.
"""
from typing import Tuple

import tensorflow as tf

from mpl_tf import layout
from mpl_tf.keras import keras


class ServingModule(tf.Module):
  """Holds the student and its serving function."""

  def __init__(self, student: keras.Model, input_shape: Tuple[int, ...], images: bool):
    super().__init__()
    self.student = student
    self.images = images
    self.input_shape = tuple(int(d) for d in input_shape)
    dtype = tf.uint8 if images else tf.float32
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, *input_shape], dtype, name="images" if images else "features")])

  def _serve(self, inputs):
    # A loaded signature does not re-check static shapes, and a pooled CNN would happily classify a 16x16
    # image: check at run time and name the expected shape.
    expected = tf.constant(self.input_shape, tf.int32)
    check = tf.debugging.assert_equal(
        tf.shape(inputs)[1:], expected,
        message=f"mpl_tf student: inputs must have shape [batch, {', '.join(map(str, self.input_shape))}]")
    with tf.control_dependencies([check]):
      x = tf.cast(inputs, tf.float32)
    if self.images:
      x = x / 255.0
    logits = tf.cast(self.student(x, training=False), tf.float32)
    return {"probabilities": tf.nn.softmax(logits, axis=-1),
            "labels": tf.argmax(logits, axis=-1, output_type=tf.int64)}


def export_student(student: keras.Model, path: str, data) -> str:
  """Writes the SavedModel to `path` and returns it; `data` gives the input shape and kind."""
  input_shape = tuple(data.input_shape)
  module = ServingModule(layout.single_device_copy(student, dtype="float32"), input_shape, images=len(input_shape) == 3)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  return path
