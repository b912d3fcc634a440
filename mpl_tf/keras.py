"""The one place that imports Keras.

Models and training use tf-keras (Keras 2), because it is the only Keras whose layouts really shard under
DTensor on TF 2.21 (see docs/dtensor.md). Every other module does `from mpl_tf.keras import keras`, so no file
ever has to guess which Keras it is talking to.
"""
import tf_keras as keras

__all__ = ["keras"]
