"""mpl_tf: Meta Pseudo Labels (Pham et al., CVPR 2021) in TensorFlow 2 / tf-keras.

`MetaPseudoLabelsModel` is the algorithm; `mpl_tf.train` is the command-line entry point. The model is
imported lazily so that `import mpl_tf.data...` does not pay for building the algorithm module.
"""
__all__ = ["MetaPseudoLabelsModel"]


def __getattr__(name):
  if name == "MetaPseudoLabelsModel":
    from mpl_tf.algorithms.mpl import MetaPseudoLabelsModel
    return MetaPseudoLabelsModel
  raise AttributeError(f"module 'mpl_tf' has no attribute {name!r}")
