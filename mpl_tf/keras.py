"""The one place that imports Keras.

Models and training use tf-keras (Keras 2), because it is the only Keras whose layouts really shard under
DTensor on TF 2.21 (see docs/dtensor.md). Every other module does `from mpl_tf.keras import keras`, so no file
ever has to guess which Keras it is talking to.

`keras_backend` is tf-keras' internal backend module, for the one class the public API does not export
(`RandomGenerator`, whose state `mpl_tf.algorithms.recompute` reads and restores); tf-keras is pinned.
"""
import tf_keras as keras
from tf_keras.src import backend as keras_backend

__all__ = ["keras", "keras_backend"]
